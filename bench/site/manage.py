"""manage.py of the published subjects (the rendered service has its own)."""

import sys

from django.core.management import execute_from_command_line

if __name__ == "__main__":  # the published worker's spawned children re-import __main__
    execute_from_command_line(sys.argv)
