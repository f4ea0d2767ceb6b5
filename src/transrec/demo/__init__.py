"""The transfer demo on the embedded default: two platforms cut out of MovieLens-100K, pre-training on one,
transfer to the other, a results table and convergence plots (``transrec demo``)."""
