//! sasl: the native producer's SASL login, run on each new connection
//! before its reader starts: SaslHandshake v1 names the mechanism, then
//! SaslAuthenticate carries its messages. It owns the messages of PLAIN
//! (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) and the order of
//! the exchange; the connection ([`super::connection`]) sends and reads.
//!
//! Invariants:
//! - SCRAM's server is checked too: the server's nonce must extend ours,
//!   its iteration count must be within Kafka's own bounds (4096..=16384,
//!   so a man in the middle cannot make each login burn seconds of
//!   PBKDF2), and its final signature must match, else the login fails.
//! - A refusal (SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
//!   ILLEGAL_SASL_STATE, ...) is [`ProducerError::Authentication`] with the
//!   broker's message and the error's name.
//!
//! Must never: put the password, or anything derived from it, in an error
//! or a log line.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sha2::{Digest, Sha256, Sha512};

use super::wire::error_name;
use super::ProducerError;
use crate::config::{SaslConfig, SaslMechanism};

/// Kafka's lowest SCRAM iteration count (its `ScramMechanism.minIterations`).
const MIN_ITERATIONS: u32 = 4096;
/// Kafka's highest SCRAM iteration count (its `ScramMechanism.maxIterations`):
/// a count past it can only come from a forged server message, and is
/// refused rather than computed.
const MAX_ITERATIONS: u32 = 16384;

/// Sends one request before the connection's reader starts and returns its
/// answer; implemented by the connection being opened.
pub(super) trait Exchange {
    fn request_handshake(
        &mut self,
        version: i16,
        body: &SaslHandshakeRequest,
    ) -> Result<SaslHandshakeResponse, ProducerError>;
    fn request_authenticate(
        &mut self,
        version: i16,
        body: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse, ProducerError>;
}

/// Logs in to the broker at `addr` as `sasl` says, through `x`; `versions`
/// is the broker's ApiVersions answer on this connection.
pub(super) fn log_in(
    x: &mut impl Exchange,
    versions: &ApiVersionsResponse,
    sasl: &SaslConfig,
    addr: &str,
) -> Result<(), ProducerError> {
    let mechanism = sasl.mechanism.kafka_name();
    let fail = |detail: String| ProducerError::Authentication {
        addr: addr.to_string(),
        mechanism,
        detail,
    };
    let Some(creds) = &sasl.credentials else {
        return Err(fail("no user name and password are configured".into()));
    };
    let hash = match sasl.mechanism {
        SaslMechanism::Plain => None,
        SaslMechanism::ScramSha256 => Some(ScramHash::Sha256),
        SaslMechanism::ScramSha512 => Some(ScramHash::Sha512),
        other => return Err(fail(format!("{other} needs kafka.client: librdkafka"))),
    };
    let supported = |key: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    let handshake_v = match supported(ApiKey::SaslHandshake) {
        Some((lo, hi)) if lo <= 1 && hi >= 1 => 1,
        _ => return Err(fail("the broker does not take SaslHandshake v1".into())),
    };
    let auth_v = match supported(ApiKey::SaslAuthenticate) {
        Some((lo, hi)) if lo <= 2 && hi >= 0 => hi.min(2),
        _ => {
            return Err(fail(
                "the broker does not take SaslAuthenticate v0..v2".into(),
            ))
        }
    };
    let r = x.request_handshake(
        handshake_v,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
    )?;
    if let Some(e) = ResponseError::try_from_code(r.error_code) {
        let enabled: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(fail(format!(
            "{}: the broker enables {}",
            error_name(e),
            enabled.join(", ")
        )));
    }
    let mut authenticate = |bytes: Vec<u8>| -> Result<Bytes, ProducerError> {
        let r = x.request_authenticate(
            auth_v,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
        )?;
        match ResponseError::try_from_code(r.error_code) {
            None => Ok(r.auth_bytes),
            Some(e) => Err(fail(match r.error_message {
                Some(m) => format!("{}: {}", error_name(e), m.as_str()),
                None => error_name(e),
            })),
        }
    };
    let password = creds.password.expose();
    let Some(hash) = hash else {
        authenticate(plain_message(&creds.username, password))?;
        return Ok(());
    };
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| fail(format!("no random nonce: {e}")))?;
    let client = ScramClient::new(hash, &creds.username, &B64.encode(nonce));
    let server_first = authenticate(client.first_message().into_bytes())?;
    let (client_final, expected) = client
        .final_message(&server_first, password)
        .map_err(|e| fail(e.to_string()))?;
    let server_final = authenticate(client_final.into_bytes())?;
    verify_server_final(&server_final, &expected).map_err(|e| fail(e.to_string()))
}

/// PLAIN's one message: no authorization id, the user, the password.
pub(super) fn plain_message(user: &str, password: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(user.len() + password.len() + 2);
    m.push(0);
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(password.as_bytes());
    m
}

/// Why a SCRAM exchange failed on the client's side (no secret in it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum ScramError {
    #[error("the server's SCRAM message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the server's SCRAM nonce does not extend the client's")]
    NonceMismatch,
    #[error("the server asks for {0} SCRAM iterations, outside 4096..=16384 (Kafka's bounds)")]
    Iterations(u32),
    #[error("the broker says: {0}")]
    Server(String),
    #[error("the server's SCRAM signature is wrong (not the broker the password is for)")]
    BadServerSignature,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's Hi(): PBKDF2 with this HMAC.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations)
                    .to_vec()
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password.as_bytes(), salt, iterations)
                    .to_vec()
            }
        }
    }
}

/// The client side of one SCRAM exchange.
pub(super) struct ScramClient {
    hash: ScramHash,
    nonce: String,
    /// client-first-message-bare: `n=user,r=nonce`.
    first_bare: String,
}

impl ScramClient {
    pub(super) fn new(hash: ScramHash, user: &str, nonce: &str) -> Self {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            hash,
            nonce: nonce.to_string(),
            first_bare: format!("n={user},r={nonce}"),
        }
    }

    /// client-first-message: no channel binding, no authorization id.
    pub(super) fn first_message(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// The client-final-message answering `server_first`, and the server
    /// signature the server-final-message must carry.
    pub(super) fn final_message(
        &self,
        server_first: &[u8],
        password: &str,
    ) -> Result<(String, Vec<u8>), ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_string()));
        }
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(v),
                Some(("i=", v)) => iterations = Some(v),
                Some(("m=", _)) => {
                    return Err(ScramError::Malformed("an unknown mandatory extension"))
                }
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64
            .decode(salt.ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("the salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::Malformed("the iteration count is not a number"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let h = self.hash;
        let salted = h.salted_password(password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        // "biws" is base64 of the gs2 header "n,,".
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)),
            server_signature,
        ))
    }
}

/// Checks the server-final-message: `v=` with the expected signature.
pub(super) fn verify_server_final(message: &[u8], expected: &[u8]) -> Result<(), ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    if let Some(e) = text.strip_prefix("e=") {
        return Err(ScramError::Server(e.to_string()));
    }
    let v = text
        .split(',')
        .find_map(|a| a.strip_prefix("v="))
        .ok_or(ScramError::Malformed("no server signature"))?;
    let got = B64
        .decode(v)
        .map_err(|_| ScramError::Malformed("the server signature is not base64"))?;
    if got != expected {
        return Err(ScramError::BadServerSignature);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example exchange.
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    #[test]
    fn scram_sha256_matches_the_rfc_7677_example() {
        let c = ScramClient::new(ScramHash::Sha256, "user", NONCE);
        assert_eq!(c.first_message(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let (client_final, expected) = c
            .final_message(SERVER_FIRST.as_bytes(), "pencil")
            .expect("final");
        assert_eq!(client_final, CLIENT_FINAL);
        assert_eq!(
            verify_server_final(SERVER_FINAL.as_bytes(), &expected),
            Ok(())
        );
    }

    #[test]
    fn scram_refuses_a_tampered_server_signature() {
        let c = ScramClient::new(ScramHash::Sha256, "user", NONCE);
        let (_, expected) = c
            .final_message(SERVER_FIRST.as_bytes(), "pencil")
            .expect("final");
        let tampered = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        assert_eq!(
            verify_server_final(tampered.as_bytes(), &expected),
            Err(ScramError::BadServerSignature)
        );
        assert_eq!(
            verify_server_final(b"e=invalid-proof", &expected),
            Err(ScramError::Server("invalid-proof".into()))
        );
    }

    #[test]
    fn scram_refuses_a_foreign_nonce_and_iterations_outside_kafkas_bounds() {
        let c = ScramClient::new(ScramHash::Sha512, "user", NONCE);
        let foreign = "r=XXprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            c.final_message(foreign.as_bytes(), "pencil").err(),
            Some(ScramError::NonceMismatch)
        );
        let weak = "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=100";
        assert_eq!(
            c.final_message(weak.as_bytes(), "pencil").err(),
            Some(ScramError::Iterations(100))
        );
        // Kafka's maximum is taken; one more is a forged server message.
        let most = "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=16384";
        assert!(c.final_message(most.as_bytes(), "pencil").is_ok());
        let costly = "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=16385";
        assert_eq!(
            c.final_message(costly.as_bytes(), "pencil").err(),
            Some(ScramError::Iterations(16385))
        );
        assert_eq!(
            c.final_message(b"e=unknown-user", "pencil").err(),
            Some(ScramError::Server("unknown-user".into()))
        );
    }

    #[test]
    fn scram_user_names_escape_comma_and_equals() {
        let c = ScramClient::new(ScramHash::Sha256, "a=b,c", "n1");
        assert_eq!(c.first_message(), "n,,n=a=3Db=2Cc,r=n1");
    }

    #[test]
    fn plain_message_is_nul_user_nul_password() {
        assert_eq!(plain_message("alice", "s3cret"), b"\0alice\0s3cret");
    }
}
