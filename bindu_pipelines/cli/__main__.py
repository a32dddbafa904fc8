import sys

from bindu_pipelines.cli import main

sys.exit(main())
