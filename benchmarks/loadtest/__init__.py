"""Open-loop load benchmark of the gateway against a bare grpc.aio echo ceiling (`vitrine loadtest`)."""
