// Multi-group 2PL with a hierarchical normal DIF shift on difficulty (sum-to-zero per
// focal group), written to the priors of DESIGN.md so that the posterior is the same as
// bayes_align's `fit(data, model="2pl", dif="normal")` (use_dif = 1) or dif="none" (0).
// Group codes: 0 = reference group (mean 0, sd 1, no DIF), 1..F = focal groups in the
// order of ResponseData.focal_groups.
data {
  int<lower=1> N;                        // observations
  int<lower=1> P;                        // persons
  int<lower=1> I;                        // items
  int<lower=0> F;                        // focal groups
  array[N] int<lower=1, upper=P> pp;     // person of observation
  array[N] int<lower=1, upper=I> ii;     // item of observation
  array[N] int<lower=0, upper=F> gg;     // group code of observation
  array[N] int<lower=0, upper=1> y;
  array[P] int<lower=0, upper=F> pg;     // group code of person
  int<lower=0, upper=1> use_dif;
}
transformed data {
  // flat index into the column-major (F + 1) x I matrix of shifts
  array[N] int kk;
  array[P] int pg1;
  for (n in 1:N) kk[n] = (ii[n] - 1) * (F + 1) + gg[n] + 1;
  for (p in 1:P) pg1[p] = pg[p] + 1;
}
parameters {
  vector[I] difficulty;
  vector[I] log_discrimination;
  vector[F] mu_focal;
  vector<lower=0>[F] sigma_focal;
  vector[P] z;
  vector<lower=0>[use_dif ? F : 0] dif_scale;
  matrix[use_dif ? F : 0, I] dif_raw;
}
transformed parameters {
  vector[I] discrimination = exp(log_discrimination);
  matrix[use_dif ? F : 0, I] dif_shift;
  if (use_dif) {
    for (f in 1:F)
      dif_shift[f] = dif_scale[f] * (dif_raw[f] - mean(dif_raw[f]));
  }
}
model {
  vector[F + 1] mu = append_row(0, mu_focal);
  vector[F + 1] sigma = append_row(1, sigma_focal);
  vector[P] theta = mu[pg1] + sigma[pg1] .* z;
  matrix[F + 1, I] shift = rep_matrix(0, F + 1, I);
  if (use_dif) shift[2:(F + 1), :] = dif_shift;

  difficulty ~ normal(0, 2);
  log_discrimination ~ normal(0, 0.5);
  mu_focal ~ normal(0, 2);
  sigma_focal ~ normal(0, 1);
  z ~ std_normal();
  if (use_dif) {
    dif_scale ~ normal(0, 1);
    to_vector(dif_raw) ~ std_normal();
  }
  y ~ bernoulli_logit(discrimination[ii] .* (theta[pp] - difficulty[ii] - to_vector(shift)[kk]));
}
