"""Former home of the figure registry, kept so that `from sinklens.figures.paper import
get_figure` in older notebooks and scripts still works: see `sinklens.figures.registry`."""

from sinklens.figures.registry import FIGURES, FigureSpec, figure_names, get_figure

__all__ = ["FIGURES", "FigureSpec", "figure_names", "get_figure"]
