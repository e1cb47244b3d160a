"""Who the sites are and what they did: which node presents which site id (owners), every
site's lifetime epsilon across runs (registry), which sites train in a round (sampling), and
each site's outcome every round and over the run (status)."""
