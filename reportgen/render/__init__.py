"""``reportgen render``: the site from the stored tables and images (never imports torch).

``pages``: one function per page kind and the ``render`` that writes them; ``views``: the
tables shaped for the templates; ``plots``: the figures; ``site``: the incremental writer,
thumbnails and the size budget.
"""

from .pages import NAV, PAGE_KINDS, render  # noqa: F401  (the package's interface)
from .site import (  # noqa: F401
    BUDGET_FIXED,
    BUDGET_PER_IMAGE,
    THUMB_SIZE,
    SiteSize,
    SiteWriter,
    environment,
    site_size,
)
