// Package prometheus holds ordinal's Prometheus files: alerts.yml, the
// alert rules; alerts_test.yml, their unit tests for `promtool test
// rules`; and prometheus.yml, the configuration of the compose file's
// monitoring profile, which scrapes node1..node3. It has no Go code of its
// own: rules_test.go checks the rules' form (labels, annotations, every
// series selected from job="ordinal"), runs promtool's checks and unit
// tests, and checks that docker-compose.yml mounts these files where
// prometheus.yml expects them and that the nodes listen where it scrapes.
// e2e/prom loads the rules into a real Prometheus scraping a real
// cluster. See ../README.md, "Monitoring".
package prometheus
