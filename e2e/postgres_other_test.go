//go:build !unix

package e2e

import "testing"

// startPostgres needs to run postgres as another user (it refuses root),
// which these tests do with Unix credentials.
func startPostgres(t *testing.T) string {
	t.Skip("postgres peer: Unix only")
	return ""
}
