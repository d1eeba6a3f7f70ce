"""`python -m services.recommendation`: run the recommendation service alone."""

import sys

from services.recommendation import app

app.main(sys.argv[1:])
