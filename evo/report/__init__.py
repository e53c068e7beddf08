"""Pictures and documents of runs, the only user of matplotlib.

Figures, the HTML gallery, perturbation animations. Figures are
``matplotlib.figure.Figure`` objects saved as PNG, so no backend is chosen at import.
"""
