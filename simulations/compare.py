"""Compare finished runs: ``python simulations/compare.py RUN_DIR [...] --out DIR``."""

from common.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
