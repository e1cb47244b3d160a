"""``fedreplay run``: a federated run through ``flwr run``, launched and verified."""
