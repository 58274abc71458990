"""Email campaigns: runs of the ``mail`` kind, one message per recipient, each
journaled as an item of the run.

Importing the package registers the kind, its tasks and the page's ``campaign``
filter (the accounts a campaign did not reach).
"""

from . import campaign  # noqa: F401
