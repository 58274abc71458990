"""Email campaigns: runs of the ``mail`` kind (``sender``), one message per
recipient, each journaled as an item of the run; ``campaign`` adds the page's
``campaign`` filter (the accounts a campaign did not reach)."""
