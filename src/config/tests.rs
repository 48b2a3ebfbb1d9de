//! Settings as the files and the environment layer them, and what is refused.

use super::*;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> Environment {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Environment::with_prefix("JUCR").source(Some(map))
}

#[test]
fn profiles_layer_over_defaults_and_env_over_both() {
    let none = Path::new("/nonexistent");
    let embedded = Settings::load_from(Profile::Embedded, none, env(&[])).unwrap();
    assert_eq!(embedded.ocpp.unknown_chargers, UnknownChargerPolicy::Accept);
    assert_eq!(embedded.http.port, 8080);

    let cloud = Settings::load_from(
        Profile::Cloud,
        none,
        env(&[
            ("JUCR__HTTP__PORT", "9001"),
            ("JUCR__DATABASE__URL", "postgres://x@y/z"),
            ("JUCR__REDIS__URL", "redis://r:6379"),
            ("JUCR__EVENTS__AMQP_URL", "amqp://x@y/%2f"),
            ("JUCR__OCPP__SUBPROTOCOLS", "ocpp1.6"),
            ("JUCR__MONGODB__URL", "mongodb://m:27017"),
            ("JUCR__OCM__SCOPES", "GB; 51.2,-0.6,51.8,0.4"),
            ("JUCR__OCM__EXCLUDED_DATA_PROVIDERS", "26,27"),
        ]),
    )
    .unwrap();
    assert_eq!(cloud.ocpp.unknown_chargers, UnknownChargerPolicy::Reject);
    assert_eq!(cloud.http.port, 9001);
    assert!(cloud.database.url.is_some());
    assert_eq!(cloud.stations.store, StationStoreKind::Mongodb);
    assert_eq!(cloud.ocm.scopes().unwrap().len(), 2);
    assert_eq!(cloud.ocm.excluded_data_providers, [26, 27]);
    assert_eq!(embedded.stations.store, StationStoreKind::Database);
    assert!(
        embedded.ocm.scopes().unwrap().is_empty(),
        "no sync by default"
    );

    let no_mongo = Settings::load_from(
        Profile::Cloud,
        none,
        env(&[
            ("JUCR__DATABASE__URL", "postgres://x@y/z"),
            ("JUCR__REDIS__URL", "redis://r:6379"),
            ("JUCR__EVENTS__AMQP_URL", "amqp://x@y/%2f"),
        ]),
    )
    .unwrap_err();
    assert!(format!("{no_mongo:#}").contains("JUCR__MONGODB__URL"));
    let bad_scope = Settings::load_from(
        Profile::Embedded,
        none,
        env(&[("JUCR__OCM__SCOPES", "Atlantis")]),
    )
    .unwrap_err();
    assert!(format!("{bad_scope:#}").contains("ocm.scopes"));
}

#[test]
fn the_cloud_bus_needs_a_broker_url() {
    let err = Settings::load_from(
        Profile::Cloud,
        Path::new("/nonexistent"),
        env(&[
            ("JUCR__DATABASE__URL", "postgres://x@y/z"),
            ("JUCR__REDIS__URL", "redis://r:6379"),
        ]),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("amqp_url"), "{err:#}");
    let err = Settings::load_from(
        Profile::Cloud,
        Path::new("/nonexistent"),
        env(&[
            ("JUCR__DATABASE__URL", "postgres://x@y/z"),
            ("JUCR__EVENTS__AMQP_URL", "amqp://x@y/%2f"),
        ]),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("redis.url"), "{err:#}");
}

#[test]
fn zero_intervals_are_refused() {
    for (key, value) in [
        ("JUCR__OCPP__PING_INTERVAL_SECS", "0"),
        ("JUCR__PERSISTENCE__FLUSH_INTERVAL_MS", "0"),
    ] {
        let err = Settings::load_from(
            Profile::Embedded,
            Path::new("/nonexistent"),
            env(&[(key, value)]),
        );
        assert!(err.is_err(), "{key}={value}");
    }
}

#[test]
fn a_short_jwt_secret_is_refused() {
    let err = Settings::load_from(
        Profile::Embedded,
        Path::new("/nonexistent"),
        env(&[("JUCR__AUTH__JWT_SECRET", "short")]),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("at least 32 bytes"), "{err:#}");
    let long = "k".repeat(32);
    let ok = Settings::load_from(
        Profile::Embedded,
        Path::new("/nonexistent"),
        env(&[("JUCR__AUTH__JWT_SECRET", long.as_str())]),
    );
    assert!(ok.is_ok());
}

#[test]
fn unknown_settings_are_refused() {
    let err = Settings::load_from(
        Profile::Embedded,
        Path::new("/nonexistent"),
        env(&[("JUCR__HTTP__PROT", "1")]),
    );
    assert!(err.is_err());
}

#[test]
fn the_dunning_schedule_is_a_list_or_one_number() {
    let none = Path::new("/nonexistent");
    let defaults = Settings::load_from(Profile::Embedded, none, env(&[])).unwrap();
    assert_eq!(defaults.billing.decline_retry_secs, [86400, 259200, 604800]);
    for (raw, expected) in [("60,120", vec![60, 120]), ("5", vec![5])] {
        let settings = Settings::load_from(
            Profile::Embedded,
            none,
            env(&[("JUCR__BILLING__DECLINE_RETRY_SECS", raw)]),
        )
        .unwrap();
        assert_eq!(settings.billing.decline_retry_secs, expected, "{raw}");
    }
}
