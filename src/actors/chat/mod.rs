//! The chat bridge's actors.
//!
//! An inbound message flows: platform adapter → [`inbox::StoreInbox`] (allowlist, stored
//! durably, deduplicated) → [`ChatSupervisor`] (`Wake`) → the conversation's
//! [`conversation::ConversationActor`] (one per `{platform}:{thread}`, started on demand,
//! stopped when idle, restarted from the store) → [`drain`] (its messages in order) →
//! `dispatch` (a command, a template or plain text, see [`action::Action`]) → `assistant` (an
//! assistant turn under the [`scheduler::Scheduler`]'s cap, stepped by the pure
//! [`crate::domain::chat::step`]) → [`reply`] (the platform's `send`/`edit`).
//!
//! Delivery guarantee: a message is marked `running` before its turn and `done`/`failed`
//! after, one at a time per conversation, in id order. A message left `running` by a crash
//! is **run again** on restart (at-least-once for a turn the crash interrupted, whose answer
//! never reached the user; exactly once for every turn that finished).
//!
//! Several nodes (`cluster.node_id`): a conversation is run only by the node holding its
//! lease (`LeaseKind::Conversation`, acquired by whichever node gets its message first,
//! renewed with the node's other leases, released when the actor goes idle). The claim
//! (`queued` → `running`) and every later write of the turn carry that lease's fence, so a
//! node that lost the conversation writes nothing more; a message stored by another node
//! wakes the owner through the store (`NOTIFY flotilla_chat`); a node taking over an expired
//! lease drains the queue and re-runs the message the dead owner left `running`.

pub mod action;
pub mod answers;
mod assistant;
pub mod commands;
pub mod conversation;
pub mod delivery;
mod dispatch;
pub mod drain;
pub mod handles;
pub mod inbox;
pub mod jira_repo;
pub mod messages;
pub mod notifier;
pub mod platforms;
mod replier;
pub mod reply;
pub mod reply_addresses;
pub mod scheduler;
pub mod spend;
pub mod test_platform;
pub mod turn_slots;
pub mod workspace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use self::conversation::ConversationActor;
use self::messages::{
    AbandonTurn, CancelTurn, ChatStats, ConversationFenced, ConversationIdle, GetChatStats,
    GetConversations, Process, StopConversation, Wake,
};
use self::platforms::ChatPlatforms;
use self::scheduler::Scheduler;
use crate::actors::cluster::{Cluster, ConversationLeases};
use crate::actors::journal::Journal;
use crate::actors::supervisor::FleetSupervisor;
use crate::config::ChatSettings;
use crate::plugins::Assistant;
use crate::store::{ConversationRecord, Fence, LeaseKind, SharedStore, StoreError};

/// What every conversation actor needs, resolved once from config.
pub struct ChatContext {
    /// The store (messages, conversations, templates).
    pub store: SharedStore,
    /// Platforms to reply through.
    pub platforms: ChatPlatforms,
    /// The assistant.
    pub assistant: Arc<dyn Assistant>,
    /// `chat:` settings.
    pub settings: ChatSettings,
    /// Root every command path is confined to.
    pub workspace: PathBuf,
    /// Where issue/PR worktrees go.
    pub worktrees: PathBuf,
    /// The turn scheduler.
    pub scheduler: Scheduler,
    /// The fleet, for `/spawn` and `/fleet`.
    pub fleet: Option<Addr<FleetSupervisor>>,
    /// The event log's writer, for what chat turns cost (`chat.turn_usage`); none in benches.
    pub journal: Option<Arc<Journal>>,
    /// How long to wait for the fleet's answer.
    pub actor_timeout: Duration,
    /// What a turn's tokens cost when the assistant reports no cost (`pricing:`).
    pub prices: Arc<crate::pricing::PriceTable>,
    /// One lock per main checkout: git refuses concurrent worktree and fetch operations on a
    /// repository (`.git/*.lock`), and conversations run in parallel.
    pub repo_locks: std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// `jira.repositories`: the repository a Jira conversation gets from its issue.
    pub jira_repositories: crate::config::JiraRepositories,
    /// The clock turn timeouts read (a test moves it).
    pub clock: crate::clock::Clock,
    /// Several nodes: each conversation is run by the node holding its lease; `None` on one
    /// node (it runs every conversation).
    pub cluster: Option<Arc<Cluster>>,
    /// Reply addresses handed out with messages (Slack's `response_url`): where a reply goes
    /// when the bot cannot post in the thread.
    pub reply_addresses: reply_addresses::ReplyAddresses,
}

impl ChatContext {
    /// The fence of `conversation` when clustered: `Ok(None)` on one node; `Fenced` when
    /// this node does not hold the conversation's lease.
    fn fence(&self, conversation: &str) -> Result<Option<Fence>, StoreError> {
        match &self.cluster {
            None => Ok(None),
            Some(c) => {
                c.conversation_fence(conversation)
                    .map(Some)
                    .ok_or_else(|| StoreError::Fenced {
                        what: format!("conversation {conversation}"),
                        generation: 0,
                    })
            }
        }
    }

    /// Whether this node may still speak for `conversation`'s turn: always on one node; when
    /// clustered, only while the database says this node's fence still holds the
    /// conversation's lease, so a node paused past the lease time does not post the reply of
    /// a turn another node now runs again. A store that cannot answer counts as yes: a reply
    /// said twice is better than none.
    pub async fn still_owns(&self, conversation: &str) -> bool {
        let Some(cluster) = &self.cluster else {
            return true;
        };
        let Some(mine) = cluster.conversation_fence(conversation) else {
            return false;
        };
        match self
            .store
            .lease_holder(LeaseKind::Conversation, conversation)
            .await
        {
            Ok(holder) => holder.as_ref() == Some(&mine),
            Err(e) => {
                tracing::warn!(conversation, error = %e, "cannot read the conversation's lease; replying");
                true
            }
        }
    }

    /// Saves a conversation's state; when clustered, only while this node holds its lease.
    ///
    /// # Errors
    /// The store's; `Fenced` when another node owns the conversation now.
    pub async fn save_conversation(&self, c: &ConversationRecord) -> Result<(), StoreError> {
        let fence = self.fence(&c.id)?;
        self.store.update_conversation(c, fence.as_ref()).await
    }

    /// Sets a conversation's resume id; when clustered, only while this node holds its lease.
    /// The write runs to its end even when the caller is dropped: it is made while a turn
    /// streams, and a timeout or `/cancel` that stops the turn must not stop the write that
    /// lets the next message resume it.
    ///
    /// # Errors
    /// As [`ChatContext::save_conversation`].
    pub async fn save_resume_id(
        &self,
        conversation: &str,
        resume_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let fence = self.fence(conversation)?;
        let store = self.store.clone();
        let (conversation, resume_id) = (conversation.to_string(), resume_id.map(str::to_string));
        crate::store::run_detached(async move {
            store
                .set_resume_id(&conversation, resume_id.as_deref(), fence.as_ref())
                .await
        })
        .await
    }

    /// The lock of the checkout at `repo`.
    pub fn repo_lock(&self, repo: &std::path::Path) -> Arc<tokio::sync::Mutex<()>> {
        match self.repo_locks.lock() {
            Ok(mut m) => m.entry(repo.to_path_buf()).or_default().clone(),
            // A poisoned map only means a panic elsewhere; a fresh lock keeps going.
            Err(_) => Arc::default(),
        }
    }
}

impl ChatContext {
    /// A context; creates the workspace and worktree roots.
    pub fn new(
        store: SharedStore,
        platforms: ChatPlatforms,
        assistant: Arc<dyn Assistant>,
        settings: ChatSettings,
        home: &std::path::Path,
    ) -> Self {
        let workspace = settings
            .workspace
            .clone()
            .unwrap_or_else(|| home.join("chat").join("workspace"));
        let worktrees = settings
            .worktrees
            .clone()
            .unwrap_or_else(|| home.join("chat").join("worktrees"));
        for d in [&workspace, &worktrees] {
            if let Err(e) = std::fs::create_dir_all(d) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot create chat directory");
            }
        }
        // Paths are compared lexically: use the canonical root when it exists.
        let workspace = std::fs::canonicalize(&workspace).unwrap_or(workspace);
        let worktrees = std::fs::canonicalize(&worktrees).unwrap_or(worktrees);
        ChatContext {
            store,
            platforms,
            assistant,
            scheduler: Scheduler::new(settings.max_concurrent),
            settings,
            workspace,
            worktrees,
            fleet: None,
            journal: None,
            actor_timeout: Duration::from_secs(10),
            prices: Arc::new(crate::pricing::PriceTable::builtin_only()),
            repo_locks: Default::default(),
            jira_repositories: Default::default(),
            clock: crate::clock::Clock::system(),
            cluster: None,
            reply_addresses: Default::default(),
        }
    }
}

/// Owns one [`ConversationActor`] per conversation with work.
pub struct ChatSupervisor {
    ctx: Arc<ChatContext>,
    conversations: HashMap<String, (Addr<ConversationActor>, u64)>,
}

impl ChatSupervisor {
    /// A supervisor over `ctx`.
    pub fn new(ctx: Arc<ChatContext>) -> Self {
        ChatSupervisor {
            ctx,
            conversations: HashMap::new(),
        }
    }

    fn wake(&mut self, id: &str, sup: Addr<ChatSupervisor>) {
        let ctx = self.ctx.clone();
        let entry = self.conversations.entry(id.to_string()).or_insert_with(|| {
            let actor = ConversationActor::new(ctx, id.to_string(), sup);
            (actor.start(), 0)
        });
        entry.1 += 1;
        entry.0.do_send(Process);
    }
}

/// Where a wake goes when clustered.
enum Route {
    /// This node holds the conversation: run it here.
    Mine,
    /// Another live node holds it.
    Theirs,
}

impl ChatSupervisor {
    /// Wakes `id` on this node when it runs the conversation: always on one node; when
    /// clustered, when this node holds (or now acquired) its lease. Otherwise its owner is
    /// woken through the store, unless the wake came from there (`remote`).
    fn route(&mut self, id: String, cancel: bool, remote: bool, ctx: &mut Context<Self>) {
        let Some(cluster) = self.ctx.cluster.clone() else {
            self.deliver(&id, cancel, ctx.address());
            return;
        };
        if self.conversations.contains_key(&id) && cluster.conversation_fence(&id).is_some() {
            self.deliver(&id, cancel, ctx.address());
            return;
        }
        let store = self.ctx.store.clone();
        let key = id.clone();
        ctx.spawn(
            async move {
                match cluster.acquire_conversation(&key).await {
                    Ok(Some(_)) => Ok(Route::Mine),
                    Ok(None) => Ok(Route::Theirs),
                    Err(e) => Err(e),
                }
            }
            .into_actor(self)
            .map(move |r, act, ctx| match r {
                Ok(Route::Mine) => act.deliver(&id, cancel, ctx.address()),
                Ok(Route::Theirs) if !remote => {
                    actix::spawn(async move {
                        if let Err(e) = store.wake_conversation_owner(&id, cancel).await {
                            tracing::warn!(conversation = %id, error = %e,
                                "cannot wake the conversation's owner; its sweep will find the message");
                        }
                    });
                }
                Ok(Route::Theirs) => {}
                Err(e) => {
                    tracing::warn!(conversation = %id, error = %e, "cannot lease the conversation; the sweep retries")
                }
            }),
        );
    }

    /// Hands the wake to the conversation's actor (cancelling its turn first for `/cancel`).
    fn deliver(&mut self, id: &str, cancel: bool, sup: Addr<ChatSupervisor>) {
        if cancel {
            if let Some((addr, _)) = self.conversations.get(id) {
                addr.do_send(CancelTurn);
            }
        }
        self.wake(id, sup);
    }

    /// Wakes every conversation with pending messages. Runs at start-up (resuming what a
    /// crash or restart left) and then every [`SWEEP_INTERVAL`] as a safety net: a wake lost
    /// to a store hiccup at start-up or a dead mailbox still gets its messages processed. A
    /// wake of a busy conversation is a no-op.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let store = self.ctx.store.clone();
        ctx.spawn(
            async move { store.conversations_with_pending().await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(ids) => {
                        for id in ids {
                            // Clustered: only those this node holds or can lease.
                            act.route(id, false, true, ctx);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot list pending chat conversations")
                    }
                }),
        );
    }
}

/// How often the supervisor re-checks the store for conversations with pending messages.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

impl Actor for ChatSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let store = self.ctx.store.clone();
        // Templates first, so no message is handled before the seeded ones exist.
        ctx.wait(async move { seed_templates(&store).await }.into_actor(self));
        self.sweep(ctx);
        ctx.run_interval(SWEEP_INTERVAL, |act, ctx| act.sweep(ctx));
        if self.ctx.cluster.is_some() {
            listen_for_wakes(self.ctx.store.clone(), ctx.address());
        }
    }
}

/// Forwards the wake-ups other nodes send this node through the store (`NOTIFY`) as
/// [`Wake`]s: a message stored there for a conversation this node owns.
fn listen_for_wakes(store: SharedStore, me: Addr<ChatSupervisor>) {
    actix::spawn(async move {
        match store.conversation_wakeups().await {
            Ok(Some(mut rx)) => {
                while let Some((conversation, cancel)) = rx.recv().await {
                    if !me.connected() {
                        return;
                    }
                    me.do_send(Wake {
                        conversation,
                        cancel,
                        ahead: 0,
                        remote: true,
                    });
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e,
                "cannot listen for chat wake-ups; other nodes' messages run at the next sweep"),
        }
    });
}

impl Handler<ConversationLeases> for ChatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ConversationLeases, ctx: &mut Self::Context) {
        for id in msg.lost {
            if let Some((addr, _)) = self.conversations.remove(&id) {
                // Its turn stops now (freeing its slot: the new owner runs the message
                // again); it stops once its drain ends; its next write is refused meanwhile.
                addr.do_send(AbandonTurn);
                addr.do_send(StopConversation);
            }
        }
        for id in msg.taken {
            // Drains its queue, re-running a message the dead owner left `running`.
            self.wake(&id, ctx.address());
        }
    }
}

impl Handler<ConversationFenced> for ChatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ConversationFenced, _ctx: &mut Self::Context) {
        if self
            .conversations
            .get(&msg.conversation)
            .is_some_and(|(a, _)| *a == msg.actor)
        {
            self.conversations.remove(&msg.conversation);
        }
    }
}

impl Handler<Wake> for ChatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Wake, ctx: &mut Self::Context) {
        if msg.cancel {
            // The conversation's actor cancels its turn when it is here (`route`).
        } else if let Some(text) = crate::domain::chat::queued_notice(msg.ahead) {
            let ctx2 = self.ctx.clone();
            let id = msg.conversation.clone();
            actix::spawn(async move {
                reply::reply_to(&ctx2, &id, &text).await;
            });
        }
        self.route(msg.conversation, msg.cancel, msg.remote, ctx);
    }
}

impl Handler<ConversationIdle> for ChatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ConversationIdle, _ctx: &mut Self::Context) {
        if let Some((addr, sent)) = self.conversations.get(&msg.conversation) {
            // Equal counts: every wake we sent was seen before the actor went idle.
            if *sent == msg.wakes {
                addr.do_send(StopConversation);
                self.conversations.remove(&msg.conversation);
            }
        }
    }
}

impl Handler<GetConversations> for ChatSupervisor {
    type Result = ResponseFuture<
        Result<Vec<crate::chat::overview::ConversationView>, crate::store::StoreError>,
    >;
    fn handle(&mut self, _msg: GetConversations, _ctx: &mut Self::Context) -> Self::Result {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let conversations = ctx.store.list_conversations().await?;
            let activity = ctx.store.chat_activity().await?;
            // Read after the store: a turn that started meanwhile shows as running, not queued.
            let standing = ctx.scheduler.standing();
            Ok(crate::chat::overview::overview(
                conversations,
                &activity,
                &standing,
            ))
        })
    }
}

impl Handler<GetChatStats> for ChatSupervisor {
    type Result = ResponseFuture<ChatStats>;
    fn handle(&mut self, _msg: GetChatStats, _ctx: &mut Self::Context) -> Self::Result {
        let ctx = self.ctx.clone();
        let actors = self.conversations.len();
        Box::pin(async move {
            ChatStats {
                scheduler: scheduler_stats(&ctx).await,
                actors,
            }
        })
    }
}

/// The scheduler's counts; clustered, with the turns running on every node.
pub async fn scheduler_stats(ctx: &ChatContext) -> scheduler::SchedulerStats {
    let mut stats = ctx.scheduler.stats();
    if let Some(c) = ctx.scheduler.cluster() {
        stats.cluster_active = c.in_use().await;
    }
    stats
}

/// The running chat bridge: what `app.rs` wires into the HTTP edge.
#[derive(Clone)]
pub struct ChatBridge {
    /// The durable inbox (`AppState.chat_inbox`).
    pub inbox: Arc<dyn crate::plugins::ChatInbox>,
    /// The supervisor (stats).
    pub supervisor: Addr<ChatSupervisor>,
    /// The platforms replies go through.
    pub platforms: ChatPlatforms,
}

/// What the chat bridge is wired to besides its store and platforms.
pub struct ChatLinks {
    /// The fleet, for `/spawn` and `/fleet`.
    pub fleet: Option<Addr<FleetSupervisor>>,
    /// The event log's writer (what turns cost).
    pub journal: Option<Arc<Journal>>,
    /// The clock turn timeouts read.
    pub clock: crate::clock::Clock,
    /// Several nodes: conversations are leased through it; `None` on one node.
    pub cluster: Option<Arc<Cluster>>,
    /// Runs each assistant under `flotilla turn-guard`; `None` only when no `flotilla`
    /// executable is known (a program embedding Flotilla).
    pub turn_guard: Option<crate::plugins::assistants::TurnGuard>,
}

/// Starts the chat bridge over `platforms` (from [`platforms::chat_platforms_from`]): the assistant, the supervisor (which seeds
/// the workflow templates and resumes every conversation with pending messages), the inbox.
/// Warns once per platform whose allowlist is empty. Must run inside an actix `System`.
///
/// # Errors
/// The configured assistant cannot be built.
pub fn start(
    settings: &crate::config::Settings,
    store: SharedStore,
    home: &std::path::Path,
    platforms: ChatPlatforms,
    links: ChatLinks,
) -> Result<ChatBridge, crate::plugins::PluginError> {
    let ChatLinks {
        fleet,
        journal,
        clock,
        cluster,
        turn_guard,
    } = links;
    if turn_guard.is_none() {
        tracing::warn!(
            "no flotilla executable known (server.cli_path): chat assistants run without a \
             turn guard and outlive a node killed with -9"
        );
    }
    let assistant =
        crate::plugins::assistants::from_settings(&settings.chat.assistant, turn_guard)?;
    inbox::warn_empty_allowlists(&settings.chat);
    let mut ctx = ChatContext::new(
        store.clone(),
        platforms.clone(),
        assistant,
        settings.chat.clone(),
        home,
    );
    ctx.fleet = fleet;
    ctx.journal = journal;
    ctx.clock = clock;
    ctx.actor_timeout = settings.server.actor_timeout.get();
    ctx.prices = Arc::new(crate::pricing::PriceTable::from_settings(&settings.pricing));
    ctx.jira_repositories = settings.jira.repositories.clone();
    ctx.cluster = cluster.clone();
    if let Some(c) = &cluster {
        // The cap is the cluster's: every node's turns together.
        ctx.scheduler = Scheduler::clustered(turn_slots::ClusterSlots::start(
            c,
            settings.chat.max_concurrent,
            ctx.clock.clone(),
        ));
    }
    let supervisor = ChatSupervisor::new(Arc::new(ctx)).start();
    if let Some(c) = &cluster {
        c.set_chat_hook(supervisor.clone().recipient());
    }
    let inbox: Arc<dyn crate::plugins::ChatInbox> = Arc::new(inbox::StoreInbox::new(
        store,
        &settings.chat,
        supervisor.clone(),
    ));
    Ok(ChatBridge {
        inbox,
        supervisor,
        platforms,
    })
}

/// Stores each seeded workflow template that is missing or still an earlier seeded text (an
/// edited one is kept).
async fn seed_templates(store: &SharedStore) {
    use crate::chat::template::{front_matter_description, superseded, SEEDED};
    for (name, content) in SEEDED {
        match store.get_chat_template(name).await {
            Ok(Some(t)) if !superseded(name, &t.content) => {}
            Ok(_) => {
                let t = crate::store::ChatTemplateRecord {
                    name: name.to_string(),
                    description: front_matter_description(content).unwrap_or_default(),
                    content: content.to_string(),
                    updated_at: chrono::Utc::now(),
                };
                if let Err(e) = store.upsert_chat_template(&t).await {
                    tracing::warn!(template = name, error = %e, "cannot seed template");
                }
            }
            Err(e) => tracing::warn!(template = name, error = %e, "cannot read templates"),
        }
    }
}

/// Puts the bridge's notifier in place of every configured notifier of kind `chat` (the
/// return path of `/spawn`).
pub fn replace_chat_notifiers(
    settings: &crate::config::Settings,
    notifiers: &mut std::collections::BTreeMap<String, Arc<dyn crate::plugins::Notifier>>,
    store: &SharedStore,
    platforms: &ChatPlatforms,
) {
    for (name, n) in &settings.notifiers {
        if n.kind == crate::config::NotifierKind::Chat {
            notifiers.insert(
                name.clone(),
                Arc::new(notifier::BridgeNotifier::new(
                    store.clone(),
                    platforms.clone(),
                )),
            );
        }
    }
}
