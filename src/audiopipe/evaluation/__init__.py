"""The `evaluate` stage: test-split metrics of every final model, plots and the HTML report."""
