"""Pages, static JS and chart JSON views; reads through controlplane selectors."""
