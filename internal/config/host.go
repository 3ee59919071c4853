package config

// ValidHost reports whether h is an IP address or a host name as the
// checker accepts them in server.listen and targets (letters, digits, '-',
// '_' and dots; labels of 1 to 63, at most 253 in all), for packages that
// write configurations (internal/sslhconv) and must name their input's
// line instead of the YAML's.
func ValidHost(h string) bool { return validHost(h) }
