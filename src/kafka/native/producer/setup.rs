//! setup: the [`NativeProducer`]'s setup requests on connection 0 (the
//! bootstrap broker): ApiVersions, InitProducerId, Metadata and
//! CreateTopics, each sent alone and waited for ([`NativeProducer::call`]).
//!
//! Invariants: a topic is reported missing ([`TopicLookup::Missing`]) only
//! when Metadata answers UNKNOWN_TOPIC_OR_PARTITION, so that CreateTopics is
//! never sent for a topic that exists (on a cluster with ACLs it would be
//! refused); a refusal for want of an ACL is
//! [`ProducerError::NotAuthorized`], naming what is missing.
//!
//! A partition with fewer than 2 in-sync replicas is noted
//! ([`thin_isr`]) and warned about when it is first written to.
//!
//! Must never: send a setup request while another is unanswered on
//! connection 0.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use super::super::connection::broker_addr;
use super::super::wire::{answer_body, error_name, RequestHead, Versions};
use crate::kafka::client::missing_acl;
use crate::runtime::Backoff;

use super::{NativeProducer, PartitionState, ProducerError};

/// What the broker's metadata says about a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicLookup {
    /// It exists, and its partitions and leaders are known.
    Present,
    /// UNKNOWN_TOPIC_OR_PARTITION; `brokers` brokers are in the cluster.
    Missing { brokers: usize },
}

/// The error of `topic` in a metadata answer, if any.
fn topic_error(r: &MetadataResponse, topic: &str) -> Option<ResponseError> {
    r.topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .and_then(|t| ResponseError::try_from_code(t.error_code))
}

/// The error for `api`'s refusal `e` about `topic`: an authorization
/// refusal names the ACL that is missing.
pub(super) fn topic_refusal(topic: &str, api: &'static str, e: ResponseError) -> ProducerError {
    let cluster = match e {
        ResponseError::TopicAuthorizationFailed => false,
        ResponseError::ClusterAuthorizationFailed => true,
        _ => return ProducerError::topic(topic, format!("{api} refused: {}", error_name(e))),
    };
    ProducerError::NotAuthorized {
        topic: topic.to_string(),
        api,
        error: error_name(e),
        acl: missing_acl(topic, api, cluster),
    }
}

/// The partitions of `topic` with fewer than 2 in-sync replicas in a
/// metadata answer, with how many they have.
pub(super) fn thin_isr(r: &MetadataResponse, topic: &str) -> BTreeMap<i32, usize> {
    r.topics
        .iter()
        .filter(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.isr_nodes.len() < 2)
        .map(|p| (p.partition_index, p.isr_nodes.len()))
        .collect()
}

impl NativeProducer {
    /// Takes in the brokers a metadata answer lists.
    pub(super) fn learn_brokers(&mut self, r: &MetadataResponse) {
        for b in &r.brokers {
            self.nodes
                .insert(b.node_id.0, broker_addr(b.host.as_str(), b.port));
        }
    }
}

/// `topic` in a metadata answer, if listed without an error (a refusal for
/// want of an ACL names it, see [`topic_refusal`]).
pub(super) fn listed_topic<'a>(
    r: &'a MetadataResponse,
    topic: &str,
) -> Result<&'a MetadataResponseTopic, ProducerError> {
    let t = r
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .ok_or_else(|| ProducerError::topic(topic, "the broker's metadata does not list it"))?;
    match ResponseError::try_from_code(t.error_code) {
        Some(e) => Err(topic_refusal(topic, "Metadata", e)),
        None => Ok(t),
    }
}

/// The leader of each of `topic`'s partitions, by partition index, from a
/// metadata answer.
pub(super) fn leaders_of(r: &MetadataResponse, topic: &str) -> Result<Vec<i32>, ProducerError> {
    let t = listed_topic(r, topic)?;
    if t.partitions.is_empty() {
        return Err(ProducerError::topic(topic, "no partitions yet"));
    }
    let mut leaders = vec![-1; t.partitions.len()];
    for p in &t.partitions {
        let i = p.partition_index as usize;
        if i >= leaders.len() || p.leader_id.0 < 0 {
            return Err(ProducerError::topic(
                topic,
                format!("partition {} has no leader", p.partition_index),
            ));
        }
        leaders[i] = p.leader_id.0;
    }
    Ok(leaders)
}

impl NativeProducer {
    /// Sends one request on connection `c` and waits for its answer (setup
    /// only: nothing else may be in flight there). Answers to Produce
    /// requests that arrive meanwhile are taken in; if one of them failed,
    /// that failure is returned, but only after this request's own answer,
    /// so that connection `c` stays in step.
    pub(super) fn call<R: Encodable, S: Decodable>(
        &mut self,
        c: usize,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<S, ProducerError> {
        let timeout = self.settings.timeouts.request;
        self.call_within(c, api, version, body, timeout)
    }

    /// [`call`](Self::call), waiting at most `timeout` for the answer.
    /// A connection that fails or does not answer in time is given up (a
    /// late answer would put it out of step); the setup connection is
    /// then opened again, to another broker if one answers, at the next
    /// call. A failed Produce answer taken in meanwhile is returned in
    /// preference to the call's own failure: it must end the session.
    pub(super) fn call_within<R: Encodable, S: Decodable>(
        &mut self,
        mut c: usize,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<S, ProducerError> {
        if self.conns[c].retired && c == self.setup {
            self.move_setup()?;
            c = self.setup;
        }
        self.reopen_if_closed(c)?;
        let correlation = self.correlations.next();
        let head = RequestHead {
            api,
            version,
            correlation,
            client_id: &self.settings.client_id,
        };
        if let Err(e) = self.conns[c].write_request(&head, body, None) {
            self.conns[c].retire();
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        let mut produce_failure = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (from, r) = match self.responses.recv_timeout(left) {
                Ok(x) => x,
                Err(_) => {
                    self.conns[c].retire();
                    return Err(produce_failure.unwrap_or(ProducerError::Timeout {
                        addr: self.conns[c].addr.clone(),
                        secs: timeout.as_secs(),
                    }));
                }
            };
            if from != c {
                // An answer to a Produce request on a leader's connection.
                if let Err(e) = self.answer(from, r) {
                    produce_failure.get_or_insert(e);
                }
                continue;
            }
            let addr = &self.conns[from].addr;
            let mut buf = match answer_body(addr, r, api, version, correlation) {
                Ok(buf) => buf,
                Err(e) => {
                    self.conns[c].retire();
                    return Err(produce_failure.unwrap_or(e));
                }
            };
            if let Some(e) = produce_failure {
                return Err(e);
            }
            let proto = |detail: String| ProducerError::Protocol {
                addr: addr.clone(),
                detail,
            };
            return S::decode(&mut buf, version)
                .map_err(|e| proto(format!("{api:?} v{version}: {e}")));
        }
    }

    /// `Err` if a setup answer from connection 0 carries an error.
    fn setup_refusal(&self, api: &'static str, code: i16) -> Result<(), ProducerError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(e) => Err(ProducerError::Refused {
                addr: self.conns[self.setup].addr.clone(),
                api,
                error: error_name(e),
            }),
        }
    }

    pub(super) fn negotiate_versions(&mut self) -> Result<(), ProducerError> {
        let r: ApiVersionsResponse = self.call(
            self.setup,
            ApiKey::ApiVersions,
            0,
            &ApiVersionsRequest::default(),
        )?;
        self.setup_refusal("ApiVersions", r.error_code)?;
        self.versions = Versions::negotiate(&r, &self.conns[self.setup].addr)?;
        Ok(())
    }

    /// Gets an idempotent producer id. COORDINATOR_LOAD_IN_PROGRESS and
    /// COORDINATOR_NOT_AVAILABLE (a KRaft broker allocating a block of
    /// producer ids, or just started) are asked again in place, every
    /// 100 ms doubling to 1 s, for up to the request timeout.
    pub(super) fn init_producer_id(&mut self) -> Result<(), ProducerError> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1i64).into())
            .with_producer_epoch(-1);
        let v = self.versions.init_producer_id;
        let until = Instant::now() + self.settings.timeouts.request;
        let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let r: InitProducerIdResponse =
                self.call(self.setup, ApiKey::InitProducerId, v, &req)?;
            let loading = matches!(
                ResponseError::try_from_code(r.error_code),
                Some(
                    ResponseError::CoordinatorLoadInProgress
                        | ResponseError::CoordinatorNotAvailable
                )
            );
            if loading && Instant::now() < until {
                std::thread::sleep(retry.next_delay());
                continue;
            }
            self.setup_refusal("InitProducerId", r.error_code)?;
            self.producer_id = r.producer_id.0;
            self.producer_epoch = r.producer_epoch;
            return Ok(());
        }
    }

    /// Creates `topic` with `partitions` partitions and `replication`
    /// replicas; a topic that exists already is fine. A refusal for want of
    /// an ACL is [`ProducerError::NotAuthorized`].
    pub fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        replication: i16,
    ) -> Result<(), ProducerError> {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication)])
            .with_timeout_ms(5_000);
        let Some(v) = self.versions.create_topics else {
            return Err(ProducerError::topic(topic, "the broker does not take CreateTopics v2..v5; create the topic, or set kafka.create_topics: false"));
        };
        if replication == -1 && v < 4 {
            return Err(ProducerError::topic(topic, format!("the broker takes CreateTopics up to v{v}, which cannot ask for its default replication factor; set kafka.topic_replication_factor")));
        }
        let r: CreateTopicsResponse = self.call(self.setup, ApiKey::CreateTopics, v, &req)?;
        for t in r.topics {
            match ResponseError::try_from_code(t.error_code) {
                // TOPIC_ALREADY_EXISTS is what we want too.
                None | Some(ResponseError::TopicAlreadyExists) => {}
                Some(e) => return Err(topic_refusal(topic, "CreateTopics", e)),
            }
        }
        Ok(())
    }

    /// Asks the broker's metadata about `topic`: [`TopicLookup::Missing`]
    /// only when it answers UNKNOWN_TOPIC_OR_PARTITION; otherwise the
    /// topic's partitions and leaders are learnt (connecting to them), as
    /// [`NativeProducer::target`] needs, or the error says why not.
    pub fn lookup_topic(&mut self, topic: &str) -> Result<TopicLookup, ProducerError> {
        let r = self.metadata(topic)?;
        if topic_error(&r, topic) == Some(ResponseError::UnknownTopicOrPartition) {
            return Ok(TopicLookup::Missing {
                brokers: r.brokers.len(),
            });
        }
        self.learn(topic, &r)?;
        Ok(TopicLookup::Present)
    }

    /// Learns the topic's partitions and their leaders, and connects to
    /// leaders not yet connected.
    pub(super) fn route(&mut self, topic: &str) -> Result<(), ProducerError> {
        let r = self.metadata(topic)?;
        self.learn(topic, &r)
    }

    /// The broker's metadata about `topic` (and its brokers).
    fn metadata(&mut self, topic: &str) -> Result<MetadataResponse, ProducerError> {
        let timeout = self.settings.timeouts.request;
        self.metadata_within(topic, timeout)
    }

    /// [`metadata`](Self::metadata), waiting at most `timeout`.
    pub(super) fn metadata_within(
        &mut self,
        topic: &str,
        timeout: Duration,
    ) -> Result<MetadataResponse, ProducerError> {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_string())),
            ))]))
            .with_allow_auto_topic_creation(self.settings.allow_auto_create);
        let v = self.versions.metadata;
        self.call_within(self.setup, ApiKey::Metadata, v, &req, timeout)
    }

    /// Takes in a metadata answer `r` about `topic`: its brokers, its
    /// partitions and their leaders (connected to).
    fn learn(&mut self, topic: &str, r: &MetadataResponse) -> Result<(), ProducerError> {
        self.learn_brokers(r);
        let leaders = leaders_of(r, topic)?;
        let thin = thin_isr(r, topic);
        for &node in &leaders {
            self.connection_for(node)?;
        }
        for (i, &leader) in leaders.iter().enumerate() {
            let key = (topic.to_string(), i as i32);
            if !self.slots.contains_key(&key) {
                self.slots.insert(key, self.partitions.len());
                self.partitions.push(PartitionState {
                    topic: topic.to_string(),
                    partition: i as i32,
                    leader,
                    next_sequence: 0,
                    open: None,
                    lone_unanswered: None,
                    thin_isr: thin.get(&(i as i32)).copied(),
                    next_seal: 0,
                    hold: None,
                    held: BTreeMap::new(),
                    failing: None,
                    next_report: 0,
                    answered_ahead: BTreeMap::new(),
                    established: false,
                });
            }
        }
        self.topics.insert(topic.to_string(), leaders);
        Ok(())
    }
}
