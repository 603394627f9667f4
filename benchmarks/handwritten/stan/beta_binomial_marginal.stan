// Hierarchical Beta-Binomial with the rates integrated out, hyperprior p(a, b) proportional
// to (a + b)^-2.5 (BDA3 5.3), sampled as logit_mean = log(a / b) and
// log_concentration = log(a + b).
//
// The likelihood is written as finite sums, exact for integer counts at any a + b:
//   BetaBinomial(y | n, a, b) = C(n, y) prod_{i<y} (a + i) prod_{i<n-y} (b + i) / prod_{i<n} (a + b + i)
// (Stan's beta_binomial takes differences of lgamma values, which lose all precision at
// large a + b).
data {
  int<lower=1> K;                          // variants
  array[K] int<lower=1> n;
  array[K] int<lower=0> y;
}
transformed data {
  vector[max(n)] steps = linspaced_vector(max(n), 0, max(n) - 1);  // 0, 1, ..., max(n) - 1
  real log_choose = 0;
  for (k in 1:K) {
    log_choose += lchoose(n[k], y[k]);
  }
}
parameters {
  real logit_mean;
  real log_concentration;
}
transformed parameters {
  real a = exp(log_concentration) * inv_logit(logit_mean);
  real b = exp(log_concentration) * inv_logit(-logit_mean);
}
model {
  // (a + b)^-2.5 times the Jacobian a * b of (logit_mean, log_concentration) -> (a, b)
  target += -0.5 * log_concentration + log_inv_logit(logit_mean) + log1m_inv_logit(logit_mean);
  target += log_choose;
  for (k in 1:K) {
    target += sum(log(a + head(steps, y[k]))) + sum(log(b + head(steps, n[k] - y[k])))
              - sum(log(a + b + head(steps, n[k])));
  }
}
