"""fedreplay core: plain PyTorch, no Flower imports (except common.wire)."""
