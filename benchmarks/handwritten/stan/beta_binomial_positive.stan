// Hierarchical Beta-Binomial, hyperprior p(a, b) proportional to (a + b)^-2.5 (BDA3 5.3).
data {
  int<lower=1> K;                          // variants
  array[K] int<lower=1> n;
  array[K] int<lower=0> y;
}
parameters {
  real<lower=0> a;
  real<lower=0> b;
  vector<lower=0, upper=1>[K] rates;
}
model {
  target += -2.5 * log(a + b);
  rates ~ beta(a, b);
  y ~ binomial(n, rates);
}
