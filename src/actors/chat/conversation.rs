//! `ConversationActor`: one per conversation with work. Processes the conversation's stored
//! messages strictly in order, one at a time (a single drain loop; a wake during a drain is
//! remembered and runs another drain after it). Stops itself when idle for
//! `chat.idle_after`, through the supervisor's handshake ([`ConversationIdle`]), but not while
//! a stored reply waits for its platform: it drains again after the reply's backoff.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::delivery::Delivered;
use super::drain::drain;
use super::handles::TurnHandles;
use super::messages::{
    AbandonTurn, CancelTurn, ConversationFenced, ConversationIdle, Process, StopConversation,
};
use super::{ChatContext, ChatSupervisor};
use crate::store::StoreError;

/// How long to wait before draining again after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// One conversation's actor.
pub struct ConversationActor {
    ctx: Arc<ChatContext>,
    id: String,
    supervisor: Addr<ChatSupervisor>,
    wakes: u64,
    busy: bool,
    again: bool,
    handles: Arc<TurnHandles>,
    idle: Option<SpawnHandle>,
    /// The supervisor forgot this actor (its lease was lost): stop once the drain ends.
    stop_after: bool,
    span: tracing::Span,
}

impl ConversationActor {
    /// An actor for conversation `id`.
    pub fn new(ctx: Arc<ChatContext>, id: String, supervisor: Addr<ChatSupervisor>) -> Self {
        let span = tracing::info_span!("conversation", chat_id = %id);
        ConversationActor {
            ctx,
            id,
            supervisor,
            wakes: 0,
            busy: false,
            again: false,
            handles: Arc::new(TurnHandles::default()),
            idle: None,
            stop_after: false,
            span,
        }
    }

    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        if let Some(h) = self.idle.take() {
            ctx.cancel_future(h);
        }
        self.busy = true;
        let fut = drain(self.ctx.clone(), self.id.clone(), self.handles.clone());
        let span = self.span.clone();
        ctx.spawn(
            tracing::Instrument::instrument(fut, span)
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.busy = false;
                    if act.stop_after {
                        ctx.stop();
                        return;
                    }
                    match res {
                        Err(StoreError::Fenced { .. }) => {
                            tracing::warn!(parent: &act.span, "another node owns the conversation now; stopping here");
                            if let Some(c) = &act.ctx.cluster {
                                c.forget_conversation(&act.id);
                            }
                            act.supervisor.do_send(ConversationFenced {
                                conversation: act.id.clone(),
                                actor: ctx.address(),
                            });
                            ctx.stop();
                        }
                        Ok(_) if act.again => {
                            act.again = false;
                            act.drain(ctx);
                        }
                        Ok(Delivered::All) => act.arm_idle(ctx),
                        // The actor stays (no idle stop) until its replies are out.
                        Ok(Delivered::Waiting(wait)) => {
                            ctx.run_later(wait, |act, ctx| act.drain(ctx));
                        }
                        Err(e) => {
                            tracing::warn!(parent: &act.span, error = %e, "chat store failed; retrying");
                            act.again = false;
                            ctx.run_later(STORE_RETRY, |act, ctx| act.drain(ctx));
                        }
                    }
                }),
        );
    }

    fn arm_idle(&mut self, ctx: &mut Context<Self>) {
        let after = self.ctx.settings.idle_after.get();
        self.idle = Some(ctx.run_later(after, |act, ctx| {
            act.idle = None;
            if act.busy {
                return;
            }
            let Some(cluster) = act.ctx.cluster.clone() else {
                act.report_idle();
                return;
            };
            // Clustered: give the conversation up first, so the next message makes whichever
            // node receives it the owner. A wake meanwhile drains after (leasing it again).
            act.busy = true;
            let id = act.id.clone();
            ctx.spawn(
                async move { cluster.release_conversation(&id).await }
                    .into_actor(act)
                    .map(|_, act, ctx| {
                        act.busy = false;
                        if act.stop_after {
                            ctx.stop();
                        } else if std::mem::take(&mut act.again) {
                            act.drain(ctx);
                        } else {
                            act.report_idle();
                        }
                    }),
            );
        }));
    }

    fn report_idle(&self) {
        self.supervisor.do_send(ConversationIdle {
            conversation: self.id.clone(),
            wakes: self.wakes,
        });
    }
}

impl Actor for ConversationActor {
    type Context = Context<Self>;
}

impl Handler<Process> for ConversationActor {
    type Result = ();
    fn handle(&mut self, _msg: Process, ctx: &mut Self::Context) {
        self.wakes += 1;
        self.drain(ctx);
    }
}

impl Handler<CancelTurn> for ConversationActor {
    type Result = ();
    fn handle(&mut self, _msg: CancelTurn, _ctx: &mut Self::Context) {
        self.handles.cancel();
    }
}

impl Handler<AbandonTurn> for ConversationActor {
    type Result = ();
    fn handle(&mut self, _msg: AbandonTurn, _ctx: &mut Self::Context) {
        self.handles.abandon();
    }
}

impl Handler<StopConversation> for ConversationActor {
    type Result = ();
    fn handle(&mut self, _msg: StopConversation, ctx: &mut Self::Context) {
        if self.busy {
            self.stop_after = true;
        } else {
            ctx.stop();
        }
    }
}
