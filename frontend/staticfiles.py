"""Static files: where plotly.js is found, and how production stores them.

PlotlyFinder: the copy of plotly.js bundled in the plotly Python package, found at
``frontend/vendor/plotly.min.js`` (STATICFILES_FINDERS). collectstatic gives it a hashed name and
a gzip twin that WhiteNoise serves (4.8 MB -> about 1.4 MB); nothing comes from a CDN (the pages'
Content-Security-Policy allows scripts from this origin only).

ProductionStorage (settings_production): WhiteNoise's hashed, gzipped storage that also rewrites
the ES module imports between the dashboard's scripts (``import ... from "./plots.js"``) to the
hashed names: only hashed files are kept, so an unrewritten import would be a 404."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage
from whitenoise.storage import CompressedManifestStaticFilesStorage

PLOTLY_STATIC = "frontend/vendor/plotly.min.js"


@lru_cache(maxsize=1)
def plotly_folder() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data"


class PlotlyFinder(BaseFinder):
    def check(self, **kwargs):
        if not (plotly_folder() / "plotly.min.js").is_file():
            return [Error(f"plotly.min.js is missing from the plotly package at {plotly_folder()}",
                          hint="reinstall the project (pip install -e .): the plotly package bundles it",
                          id="frontend.E001")]
        return []

    def find(self, path, find_all=False, **kwargs):
        if path != PLOTLY_STATIC:
            return []
        found = str(plotly_folder() / "plotly.min.js")
        return [found] if (find_all or kwargs.get("all")) else found

    def list(self, ignore_patterns):
        storage = FileSystemStorage(location=plotly_folder())
        storage.prefix = PLOTLY_STATIC.rsplit("/", 1)[0]  # collectstatic and WhiteNoise read it
        yield "plotly.min.js", storage


class ProductionStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
