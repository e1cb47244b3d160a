"""What bounds a hostile site: the checks a reply passes before anything reads it
(reply_checks), the aggregation rules with one site's influence bounded (aggregation), the
replay check a site's generator passes before it joins the replay (replay_check), the
direction bound on embedding releases (release_consensus), and the hostile sites the
robustness suite plays (attacks)."""
