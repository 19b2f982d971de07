"""The peers of the benchmark: the same model in Stan (pystan), PyMC (+ nutpie), py-irt."""
