"""fedreplay server side: the ServerApp edge, strategy, aggregation and evaluation."""
