//! Commands on connections wherever they are (Disconnect, Subscribe, Unsubscribe by user or
//! connection): validated here, carried out by the engine on the nodes that hold them, which
//! run them through [`super::CommandHandler`].

use super::*;

impl Hub {
    /// Runs a command on the connections of this node `target` names: NOT_FOUND for a
    /// connection id that is not live here. Called by the control seam, on the owning node
    /// (through [`CommandHandler`]).
    pub(super) async fn run_command_here(
        &self,
        target: Who,
        command: Command,
    ) -> Result<u32, CoreError> {
        let conns = match &target {
            Who::Connection(id) => {
                vec![self.local.get(id).ok_or_else(|| CoreError::NotFound {
                    what: format!("connection {id:?}"),
                })?]
            }
            Who::User(user) => self.local.registry.of_user(user),
            other => return Err(not_a_command_target(other)),
        };
        let mut n = 0;
        for c in &conns {
            let done = match &command {
                Command::Disconnect { code, reason } => {
                    self.local
                        .close_from(c, *code, reason, close::Origin::Backend)
                }
                Command::Subscribe { topic } => {
                    self.subscribe(c, topic, None, None, 0, false).await.is_ok()
                        && c.has_topic(topic)
                }
                Command::Unsubscribe { topic } => self.unsubscribe(c, topic, None),
            };
            n += u32::from(done);
        }
        Ok(n)
    }

    fn check_command_target(target: &Who) -> Result<(), CoreError> {
        match target {
            Who::Connection(id) if id.is_empty() => {
                Err(CoreError::invalid("connection_id", "is required"))
            }
            Who::User(u) if u.is_empty() => Err(CoreError::invalid("user_id", "is required")),
            Who::Connection(_) | Who::User(_) => Ok(()),
            other => Err(not_a_command_target(other)),
        }
    }

    /// Subscribes the selected connections (no authorization, no cap: the backend decides);
    /// returns how many are subscribed now.
    pub async fn subscribe_selected(&self, topic: &str, target: Who) -> Result<u32, CoreError> {
        topic::validate_name("topic", topic)?;
        Self::check_command_target(&target)?;
        self.control
            .command(
                target,
                Command::Subscribe {
                    topic: topic.to_owned(),
                },
            )
            .await
    }

    /// Unsubscribes the selected connections; returns how many were subscribed.
    pub async fn unsubscribe_selected(&self, topic: &str, target: Who) -> Result<u32, CoreError> {
        topic::validate_name("topic", topic)?;
        Self::check_command_target(&target)?;
        self.control
            .command(
                target,
                Command::Unsubscribe {
                    topic: topic.to_owned(),
                },
            )
            .await
    }

    /// Closes the selected connections with `code` (0 means 4000) and `reason`.
    pub async fn disconnect(&self, target: Who, code: u32, reason: &str) -> Result<u32, CoreError> {
        let code = match code {
            0 => close::DISCONNECTED,
            4000..=4999 => code as u16,
            other => {
                return Err(CoreError::invalid(
                    "code",
                    format!("{other} is not a close code in 4000..4999"),
                ))
            }
        };
        if reason.len() > close::MAX_REASON_BYTES {
            return Err(CoreError::invalid(
                "reason",
                format!(
                    "is {} bytes, over the limit of {}",
                    reason.len(),
                    close::MAX_REASON_BYTES
                ),
            ));
        }
        Self::check_command_target(&target)?;
        self.control
            .command(
                target,
                Command::Disconnect {
                    code,
                    reason: reason.to_owned(),
                },
            )
            .await
    }
}

fn not_a_command_target(who: &Who) -> CoreError {
    CoreError::invalid(
        "target",
        format!("{who:?}: a command acts on a connection or a user's connections"),
    )
}
