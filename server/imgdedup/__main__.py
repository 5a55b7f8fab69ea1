from imgdedup.cli import main
import sys

sys.exit(main())
