use super::*;
use k8s_openapi::jiff::Timestamp;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn accepted(status: bool, reason: &'static str) -> Desired {
    Desired::new(types::ACCEPTED, status, reason, format!("{reason} message"))
}

#[test]
fn a_new_condition_gets_the_current_time_and_generation() {
    let out = merge(&[], &[accepted(true, reasons::ACCEPTED)], Some(3), &at(100));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_, "Accepted");
    assert_eq!(out[0].status, "True");
    assert_eq!(out[0].observed_generation, Some(3));
    assert_eq!(out[0].last_transition_time, at(100));
}

#[test]
fn unchanged_status_keeps_its_transition_time_but_updates_reason_and_generation() {
    let first = merge(&[], &[accepted(false, reasons::INVALID)], Some(1), &at(100));
    let second = merge(
        &first,
        &[accepted(false, reasons::CONFLICTED)],
        Some(2),
        &at(200),
    );
    assert_eq!(second[0].last_transition_time, at(100));
    assert_eq!(second[0].reason, "Conflicted");
    assert_eq!(second[0].observed_generation, Some(2));
}

#[test]
fn a_status_flip_moves_the_transition_time() {
    let first = merge(&[], &[accepted(false, reasons::INVALID)], Some(1), &at(100));
    let second = merge(
        &first,
        &[accepted(true, reasons::ACCEPTED)],
        Some(2),
        &at(200),
    );
    assert_eq!(second[0].last_transition_time, at(200));
    assert_eq!(second[0].status, "True");
}

#[test]
fn merging_the_same_desired_state_twice_is_a_no_op() {
    let desired = [
        accepted(true, reasons::ACCEPTED),
        Desired::new(types::PROGRAMMED, false, reasons::PENDING, "waiting"),
    ];
    let first = merge(&[], &desired, Some(1), &at(100));
    let second = merge(&first, &desired, Some(1), &at(500));
    assert_eq!(first, second);
}

#[test]
fn conditions_are_written_in_a_fixed_order_whatever_the_input_order() {
    let desired = [
        Desired::new(types::DRAIN_FITS, true, reasons::FITS, ""),
        Desired::new(types::PROGRAMMED, false, reasons::PENDING, ""),
        accepted(true, reasons::ACCEPTED),
        Desired::new(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, ""),
    ];
    let out = merge(&[], &desired, None, &at(1));
    let order: Vec<_> = out.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        order,
        ["Accepted", "ResolvedRefs", "Programmed", "DrainFits"]
    );
}

#[test]
fn owned_types_no_longer_desired_are_removed_and_foreign_types_are_kept() {
    let mut existing = merge(
        &[],
        &[
            accepted(true, reasons::ACCEPTED),
            Desired::new(types::DRAIN_FITS, true, reasons::FITS, ""),
        ],
        Some(1),
        &at(1),
    );
    existing.push(Condition {
        type_: "example.com/Audited".into(),
        status: "True".into(),
        reason: "Audited".into(),
        message: String::new(),
        observed_generation: None,
        last_transition_time: at(1),
    });
    let out = merge(
        &existing,
        &[accepted(true, reasons::ACCEPTED)],
        Some(1),
        &at(2),
    );
    let order: Vec<_> = out.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(order, ["Accepted", "example.com/Audited"]);
}

#[test]
fn transitions_report_new_types_and_status_or_reason_changes_only() {
    let old = merge(
        &[],
        &[
            accepted(true, reasons::ACCEPTED),
            Desired::new(types::PROGRAMMED, false, reasons::PENDING, "1 of 2"),
        ],
        Some(1),
        &at(1),
    );
    let new = merge(
        &old,
        &[
            accepted(true, reasons::ACCEPTED),
            Desired::new(types::PROGRAMMED, false, reasons::PENDING, "0 of 2"),
            Desired::new(
                types::RESOLVED_REFS,
                false,
                reasons::BACKEND_NOT_FOUND,
                "gone",
            ),
        ],
        Some(1),
        &at(2),
    );
    let t = transitions(&old, &new);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].type_, "ResolvedRefs");
    assert_eq!(t[0].reason, "BackendNotFound");
    assert!(!t[0].status);
}

#[test]
fn is_true_reads_the_status_of_the_named_type() {
    let c = merge(&[], &[accepted(true, reasons::ACCEPTED)], None, &at(1));
    assert!(is_true(&c, types::ACCEPTED));
    assert!(!is_true(&c, types::PROGRAMMED));
}
