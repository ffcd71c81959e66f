// Package grafana holds ordinal's Grafana dashboard,
// ordinal-dashboard.json, to import into a Grafana whose Prometheus
// scrapes the nodes, and the provisioning files with which the compose
// file's grafana profile loads it. It has no Go code of its own:
// dashboard_test.go checks the dashboard's form (panels, layout, data
// source and variables, every series selected from the chosen job and
// nodes) and the provisioning; e2e/prom evaluates every panel's queries in
// a real Prometheus scraping a real cluster. See ../README.md,
// "Monitoring".
package grafana
