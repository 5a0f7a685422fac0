"""The authorization server's tables (migration 0005 creates them).

Times are integer seconds since the Unix epoch (UTC). Secrets are never stored as given:
client secrets and user passwords as Argon2id hashes, codes and tokens as SHA-256 digests,
private signing keys encrypted under the master key.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table, Text

from app.fhir.tables import metadata

signing_key = Table(
    "auth_signing_key",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_jwk", Text, nullable=False),  # JSON
    Column("private_key", LargeBinary, nullable=False),  # AES-GCM sealed PKCS#8 PEM
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),  # no longer signs
    Column("expires_at", BigInteger, nullable=True),  # public key may be dropped after this
)

oauth_client = Table(
    "auth_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # public | confidential | backend
    Column("secret_hash", Text, nullable=True),  # confidential symmetric
    Column("redirect_uris", Text, nullable=False, default="[]"),  # JSON list
    Column("launch_uri", Text, nullable=True),
    Column("scope", Text, nullable=False),  # space-separated scopes it may be granted
    Column("jwks", Text, nullable=True),  # JSON JWK Set (asymmetric / backend)
    Column("jwks_uri", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

app_user = Table(
    "auth_user",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("role", String(32), nullable=False),  # practitioner | patient | admin | compliance
    Column("fhir_user", String(200), nullable=True),  # Practitioner/123, Patient/456
    Column("password_hash", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# A pending browser authorization (/auth/authorize -> login -> picker -> consent -> code).
auth_request = Table(
    "auth_request",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("browser_hash", String(64), nullable=False),  # binds the request to one browser
    Column("params", Text, nullable=False),  # JSON of the validated authorize parameters
    Column("username", String(200), nullable=True),  # set once the user logged in
    Column("patient", String(64), nullable=True),  # chosen in the picker or from the launch
    Column("encounter", String(64), nullable=True),
    Column("expires_at", BigInteger, nullable=False),
)

authorization_code = Table(
    "auth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("claims", Text, nullable=False),  # JSON: redirect_uri, scope, user, context, PKCE
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
)

# Every access and refresh token issued, so that it can be introspected and revoked.
issued_token = Table(
    "auth_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # jti of an access token; SHA-256 of
    #                                                      a refresh token
    Column("kind", String(8), nullable=False),  # access | refresh
    Column("client_id", String(64), nullable=False),
    Column("family", String(64), nullable=False),  # the code or grant everything descends from
    Column("claims", Text, nullable=False),  # JSON: scope, user, fhirUser, patient, encounter
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("rotated_at", BigInteger, nullable=True),  # a refresh token that was used
    Index("ix_auth_token_family", "family"),
)

launch_context = Table(
    "auth_launch",
    metadata,
    Column("launch_id", String(64), primary_key=True),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("client_id", String(64), nullable=True),  # migration 0017: NULL for any client
)

# RFC 7523 client assertions: a jti is accepted once per client until its exp has passed.
used_assertion = Table(
    "auth_used_assertion",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# Failed sign-ins per username given (lockout.py): a row per wrong password, dropped on a
# successful sign-in and once older than the lockout window.
login_failure = Table(
    "auth_login_failure",
    metadata,
    Column("username", String(255), nullable=False),
    Column("at", BigInteger, nullable=False),
)
