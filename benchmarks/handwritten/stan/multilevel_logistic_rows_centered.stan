// The row-level model users write by hand: one Bernoulli term per row.
data {
  int<lower=1> N;                          // rows
  int<lower=1> J;                          // groups
  array[N] int<lower=1, upper=J> group;
  vector<lower=0, upper=1>[N] treated;
  array[N] int<lower=0, upper=1> success;
}
parameters {
  real mu_a;
  real<lower=0> sigma_a;
  real mu_b;
  real<lower=0> sigma_b;
  vector[J] a;
  vector[J] b;
}
model {
  mu_a ~ student_t(3, 0, 1);
  sigma_a ~ normal(0, 1);
  mu_b ~ student_t(3, 0, 1);
  sigma_b ~ normal(0, 1);
  a ~ normal(mu_a, sigma_a);
  b ~ normal(mu_b, sigma_b);
  success ~ bernoulli_logit(a[group] + b[group] .* treated);
}
generated quantities {
  vector[J] a_inv = inv_logit(a);
  vector[J] fin = inv_logit(a + b);
}
