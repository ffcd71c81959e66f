// Package systemd holds ordinal's systemd unit: ordinal.service, hardened,
// with an example of the /etc/ordinal/ordinal.env it reads and a sysusers.d
// file for its user. It has no Go code of its own: unit_test.go parses the
// files and checks the settings the unit depends on, and that every
// ORDINAL_<FLAG> of the example is a flag of ordinal serve. See
// ../README.md, "systemd".
package systemd
