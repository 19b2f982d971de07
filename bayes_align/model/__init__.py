"""The joint IRT model: what to fit (:mod:`.spec`), the math of answer probabilities
(:mod:`.irt`), the observed-data distributions (:mod:`.distributions`), the model's
arrays (:mod:`.inputs`), the NumPyro model (:mod:`.joint`) and its posterior names
(:mod:`.dims`)."""

from bayes_align.model.spec import DIF_PRIORS, IRT_MODELS, LIKELIHOODS, ModelSpec, Priors

__all__ = ["DIF_PRIORS", "IRT_MODELS", "LIKELIHOODS", "ModelSpec", "Priors"]
