"""``python -m benchmarks``: run every workload and write the report."""

from benchmarks.run import main

raise SystemExit(main())
