"""fedreplay site side: the ClientApp edge and the site's local state and training."""
