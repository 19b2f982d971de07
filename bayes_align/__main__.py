import sys

from bayes_align.cli import main

sys.exit(main())
