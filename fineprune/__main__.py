import sys

from fineprune.cli import main

sys.exit(main())
