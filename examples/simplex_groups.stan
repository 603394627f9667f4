// Each group's mix of K categories, a simplex, drawn around a common mix p with
// concentration kappa: an array of simplexes under a dirichlet whose alpha is a parameter.
data {
  int<lower=1> N;
  int<lower=1> J;
  int<lower=2> K;
  array[N] int<lower=1, upper=J> group;
  array[N] int<lower=1, upper=K> y;
}
parameters {
  simplex[K] p;
  real<lower=0> kappa;
  array[J] simplex[K] theta;
}
model {
  kappa ~ lognormal(2, 1);
  for (j in 1:J) {
    theta[j] ~ dirichlet(kappa * p);
  }
  for (n in 1:N) {
    y[n] ~ categorical(theta[group[n]]);
  }
}
