"""Privacy at the server: client-level DP (client_dp) accounted over the federation's
lifetime (client_ledger), the run's privacy ledger from what the sites reported (report),
and ``fedreplay privacy`` (cli)."""
