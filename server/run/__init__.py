"""A federated run: the loop (federation), the Flower strategy it drives (strategy), what
sites replay (replay_payload, deliveries), its state and checkpoints (state, checkpoint),
each round's metrics (round_metrics), its end (finish), and where
it runs and what a person sees (inprocess, output_dir, console, progress_grid)."""
