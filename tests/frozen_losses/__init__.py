"""The loss implementations as they were before the segment-reduction rewrite (blob, IWL-blob,
inverse weighting, the instance family and their shared sums), kept unchanged as test oracles:
the current functions must give the same values and gradients (``tests/test_loss_rewrite_equivalence.py``).

Only the imports were changed (package-absolute for the modules not copied here); nothing imports
this package but the tests."""
