//! Unit tests of the key format, the connection-string dispatch and validity.

use super::*;

#[test]
fn keys_are_prefixed_hex_and_distinct() {
    let a = generate_key().expect("key");
    let b = generate_key().expect("key");
    assert!(is_key_shaped(&a), "{a}");
    assert_eq!(a.len(), KEY_PREFIX.len() + 64);
    assert_ne!(a, b);
    assert!(!is_key_shaped("isol8_XYZ"));
    assert!(!is_key_shaped(&a.to_uppercase()));
    assert!(!is_key_shaped(&format!("{a}0")));
    // The display prefix is the first 10 characters and `...`, as isol8 v0.20 stores it.
    assert_eq!(display_prefix(&a), format!("{}...", &a[..10]));
    assert_eq!(display_prefix(&a).len(), 13);
}

#[test]
fn hashes_are_sha256_hex() {
    // sha256("abc")
    assert_eq!(
        hash_key("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn comparison_is_exact() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"secret2"));
    assert!(!constant_time_eq(b"", b"x"));
    assert!(constant_time_eq(b"", b""));
}

#[test]
fn times_are_stored_as_javascript_writes_them() {
    let t = DateTime::from_timestamp_millis(1_738_324_800_123).expect("time");
    assert_eq!(format_time(t), "2025-01-31T12:00:00.123Z");
    assert_eq!(parse_time("2025-01-31T12:00:00.123Z"), Some(t));
    assert_eq!(time_of_millis(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(parse_time("yesterday"), None);
    assert!(parse_time(NEVER).is_some());
}

#[test]
fn validity_follows_revocation_and_expiry() {
    let t = |s: &str| parse_time(s).expect("time");
    let mut k = KeyInfo {
        id: "i".into(),
        name: "n".into(),
        key_prefix: "isol8_abcd...".into(),
        tenant_id: "t".into(),
        created_at: "2025-01-01T00:00:00.000Z".into(),
        expires_at: "2025-01-01T00:00:01.000Z".into(),
        last_used_at: None,
        revoked: false,
    };
    assert!(k.is_valid_at(t("2025-01-01T00:00:00.999Z")));
    assert!(k.is_valid_at(t("2025-01-01T00:00:01.000Z")));
    assert!(!k.is_valid_at(t("2025-01-01T00:00:01.001Z")));
    // An expiry that cannot be read is refused.
    k.expires_at = "never".into();
    assert!(!k.is_valid_at(t("2000-01-01T00:00:00.000Z")));
    k.expires_at = NEVER.into();
    assert!(k.is_valid_at(t("2999-01-01T00:00:00.000Z")));
    k.revoked = true;
    assert!(!k.is_valid_at(t("2000-01-01T00:00:00.000Z")));
    let v = k.to_json();
    let fields: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(
        fields,
        [
            "createdAt",
            "expiresAt",
            "id",
            "keyPrefix",
            "lastUsedAt",
            "name",
            "revoked",
            "tenantId"
        ]
    );
    assert_eq!(v["lastUsedAt"], Value::Null);
}

#[test]
fn connection_strings_pick_the_backend() {
    let sqlite = |p: &str| Ok(Backend::Sqlite(p.to_string()));
    for (conn, want) in [
        ("./auth.db", sqlite("./auth.db")),
        ("/home/u/.isol8/auth.db", sqlite("/home/u/.isol8/auth.db")),
        ("auth.db", sqlite("auth.db")),
        ("~/.isol8/auth.db", sqlite("~/.isol8/auth.db")),
        ("sqlite:/var/auth.db", sqlite("/var/auth.db")),
        ("sqlite:///var/auth.db", sqlite("/var/auth.db")),
        ("sqlite://rel.db", sqlite("rel.db")),
        (
            "postgres://u:p@h:5432/d",
            Ok(Backend::Postgres("postgres://u:p@h:5432/d".into())),
        ),
        (
            "postgresql://u:p@h/d",
            Ok(Backend::Postgres("postgresql://u:p@h/d".into())),
        ),
        (
            "mysql://root:s@localhost:3306/isol8",
            Ok(Backend::Mysql("mysql://root:s@localhost:3306/isol8".into())),
        ),
        (
            "MariaDB://root:s@db/isol8",
            Ok(Backend::Mysql("mysql://root:s@db/isol8".into())),
        ),
    ] {
        assert_eq!(Backend::of(conn).map_err(|e| e.to_string()), want, "{conn}");
    }
    // Not a file named "mongodb://…": an error naming what is supported.
    let e = Backend::of("mongodb://u:secret@h/d").expect_err("unsupported");
    assert!(e.to_string().contains("`mongodb://`"), "{e}");
    assert!(e.to_string().contains("mysql://"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
    assert!(is_mysql_url("mysql://h/d") && !is_mysql_url("h.db"));
    assert!(is_postgres_url("postgres://h/d") && !is_postgres_url("mysql://h/d"));
    assert_eq!(
        Backend::of("mysql://u:pw@h/d").expect("ok").describe(),
        "MySQL"
    );
    assert_eq!(
        Backend::of("postgres://u:pw@h/d").expect("ok").describe(),
        "PostgreSQL"
    );
}
