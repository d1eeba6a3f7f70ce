"""`python -m services.segmentation`: run the segmentation service until SIGTERM."""

import sys

from services.segmentation import app

app.main(sys.argv[1:])
