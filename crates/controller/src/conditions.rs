//! Status conditions: one per thing the controller does, with a reason and a message a person
//! can act on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// A condition to record, before it gets its transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCondition {
    pub type_: &'static str,
    /// [`TRUE`], [`FALSE`] or [`UNKNOWN`].
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl NewCondition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        NewCondition {
            type_,
            status: if status { TRUE } else { FALSE },
            reason,
            message: message.into(),
        }
    }

    /// A condition the controller cannot tell right now.
    pub fn unknown(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        NewCondition {
            type_,
            status: UNKNOWN,
            reason,
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == TRUE
    }
}

/// Sets `new` in `conditions`, keeping `lastTransitionTime` when the status did not change, as
/// the Kubernetes API conventions ask.
pub fn set(
    conditions: &mut Vec<Condition>,
    new: NewCondition,
    generation: Option<i64>,
    now: &Time,
) {
    let status = new.status;
    let transition = conditions
        .iter()
        .find(|c| c.type_ == new.type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(Condition {
        type_: new.type_.to_string(),
        status: status.to_string(),
        reason: new.reason.to_string(),
        message: new.message,
        last_transition_time: transition,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Removes a condition that no longer applies.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            NewCondition::new("Ready", true, "Fine", "all good"),
            Some(1),
            &at(10),
        );
        set(
            &mut conditions,
            NewCondition::new("Ready", true, "Fine", "still good"),
            Some(2),
            &at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "still good");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set(
            &mut conditions,
            NewCondition::new("Ready", false, "Broken", "bad"),
            Some(3),
            &at(30),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(conditions[0].status, FALSE);

        remove(&mut conditions, "Ready");
        assert!(find(&conditions, "Ready").is_none());
    }
}
