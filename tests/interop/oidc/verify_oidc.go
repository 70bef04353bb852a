// verify_oidc: a relying party as go-oidc users write one. It discovers ISSUER
// (ISSUER/.well-known/openid-configuration, then its jwks_uri) and verifies a token for the
// client id AUDIENCE, accepting the algorithms the discovery document lists (as go-oidc v3
// does by default; v2 would otherwise accept RS256 only).
//
// Usage: verify_oidc ISSUER AUDIENCE < TOKEN
// Exit status: 0 verified, 1 not verified (the reason on stderr), 2 usage error.
// HTTPS trusts the system roots, or SSL_CERT_FILE / SSL_CERT_DIR when set (Go's crypto/x509).
package main

import (
	"context"
	"fmt"
	"io/ioutil"
	"net/http"
	"os"
	"strings"
	"time"

	oidc "github.com/coreos/go-oidc"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "verify_oidc: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: verify_oidc ISSUER AUDIENCE < TOKEN")
		os.Exit(2)
	}
	issuer, audience := os.Args[1], os.Args[2]
	raw, err := ioutil.ReadAll(os.Stdin)
	if err != nil {
		fail("cannot read the token from stdin: %v", err)
	}
	token := strings.TrimSpace(string(raw))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = oidc.ClientContext(ctx, &http.Client{Timeout: 10 * time.Second})

	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		fail("discovery of %s failed: %v", issuer, err)
	}
	var meta struct {
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		fail("discovery document of %s: %v", issuer, err)
	}
	if len(meta.Algs) == 0 {
		fail("discovery document of %s lists no id_token_signing_alg_values_supported", issuer)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: audience, SupportedSigningAlgs: meta.Algs})
	idt, err := verifier.Verify(ctx, token)
	if err != nil {
		fail("token not verified: %v", err)
	}
	fmt.Printf("verified: iss=%s sub=%s aud=%s algs=%s\n", idt.Issuer, idt.Subject,
		strings.Join(idt.Audience, ","), strings.Join(meta.Algs, ","))
}
