//! Profiles and avatar pictures (schema v10).
#![allow(clippy::unwrap_used)]

mod common;

use common::Fixture;
use linnet_store::{AvatarSource, StoreError};

const PIC1: &str = "0123456789abcdef0123456789abcdef01234567";
const PIC2: &str = "89abcdef0123456789abcdef0123456789abcdef";

#[test]
fn nick_and_avatar_are_kept_and_old_pictures_go() {
    let f = Fixture::new();
    let mut store = f.open(1);
    let a = store.add_account("me@example.org", "pw").unwrap();
    store
        .transaction(|tx| {
            assert!(tx.set_profile_nick(a, "bob@example.org", Some("Bob"))?);
            assert!(
                !tx.set_profile_nick(a, "bob@example.org", Some("Bob"))?,
                "unchanged"
            );
            tx.put_avatar(a, PIC1, "image/png", b"one")?;
            assert!(tx.set_profile_avatar(a, "bob@example.org", Some(PIC1), AvatarSource::Pep)?);
            assert!(!tx.set_profile_avatar(a, "bob@example.org", Some(PIC1), AvatarSource::Pep)?);
            Ok(())
        })
        .unwrap();
    drop(store);
    let mut store = f.open(1);
    let p = store.profile(a, "bob@example.org").unwrap().unwrap();
    assert_eq!(p.nick.as_deref(), Some("Bob"));
    assert_eq!(p.avatar.as_deref(), Some(PIC1));
    assert_eq!(p.avatar_source, Some(AvatarSource::Pep));
    assert_eq!(store.avatar(a, PIC1).unwrap().unwrap().data, b"one");
    // A new picture replaces the old one, which nobody else shows: it is deleted.
    store
        .transaction(|tx| {
            tx.put_avatar(a, PIC2, "image/png", b"two")?;
            tx.set_profile_avatar(a, "bob@example.org", Some(PIC2), AvatarSource::Pep)?;
            Ok(())
        })
        .unwrap();
    assert!(store.avatar(a, PIC1).unwrap().is_none());
    assert_eq!(store.avatar(a, PIC2).unwrap().unwrap().data, b"two");
    // A picture two contacts share stays while one of them shows it.
    store
        .transaction(|tx| {
            tx.set_profile_avatar(a, "carol@example.org", Some(PIC2), AvatarSource::Vcard)?;
            tx.set_profile_avatar(a, "bob@example.org", None, AvatarSource::Pep)?;
            Ok(())
        })
        .unwrap();
    assert!(store.avatar(a, PIC2).unwrap().is_some());
    let all = store.profiles(a).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].avatar, None);
    assert_eq!(all[1].avatar_source, Some(AvatarSource::Vcard));
}

#[test]
fn bad_input_is_refused_and_accounts_take_their_profiles_along() {
    let f = Fixture::new();
    let mut store = f.open(1);
    let a = store.add_account("me@example.org", "pw").unwrap();
    store
        .transaction(|tx| {
            assert!(matches!(
                tx.put_avatar(a, "not-a-hash", "image/png", b"x"),
                Err(StoreError::InvalidInput(_))
            ));
            assert!(matches!(
                tx.put_avatar(a, &PIC1.to_uppercase(), "image/png", b"x"),
                Err(StoreError::InvalidInput(_))
            ));
            assert!(matches!(
                tx.set_profile_avatar(a, "", Some(PIC1), AvatarSource::Pep),
                Err(StoreError::InvalidInput(_))
            ));
            tx.put_avatar(a, PIC1, "image/png", b"x")?;
            tx.set_profile_avatar(a, "bob@example.org", Some(PIC1), AvatarSource::Pep)?;
            Ok(())
        })
        .unwrap();
    store.remove_account(a).unwrap();
    let b = store.add_account("me@example.org", "pw").unwrap();
    assert!(store.profiles(b).unwrap().is_empty());
    assert!(store.avatar(b, PIC1).unwrap().is_none());
}
