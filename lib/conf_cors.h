/* [jwks] cors-origins: which origins are well-formed, as a browser sends them in Origin. */
#pragma once

/* NULL when s is an origin exactly as a browser serializes it (RFC 6454, 6.2): a lowercase
 * scheme, "://", a lowercase host (name, IPv4 or [IPv6]) and a port only when it is not the
 * scheme's default; nothing else. Otherwise why not, a static string. Only such an origin can
 * ever equal a request's Origin header byte for byte. */
const char *conf_origin_invalid(const char *s);
