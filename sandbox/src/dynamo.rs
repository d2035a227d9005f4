//! One embedded dynoxide server per region, plus table helpers that work on any DynamoDB
//! endpoint (dynoxide, moto, DynamoDB Local).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableDescription, TableStatus, TimeToLiveSpecification,
};

use crate::clients::{dynamodb_client_with, ClientOptions};
use crate::error::{Result, SandboxError};
use crate::util::{bind_reuse, BackgroundRuntime, LOOPBACK};

/// A wall clock shifted by a fixed, adjustable offset: a region's skewed clock.
///
/// It is dynoxide's clock for the region (stream record times, TTL sweeps) and what
/// [`DynamoRegion::now_ms`] reads.
#[derive(Debug, Default)]
pub struct SkewedClock {
    offset_ms: AtomicI64,
}

impl SkewedClock {
    /// A clock `offset_ms` milliseconds ahead of the system clock (negative: behind).
    pub fn new(offset_ms: i64) -> Self {
        SkewedClock {
            offset_ms: AtomicI64::new(offset_ms),
        }
    }

    /// The offset from the system clock, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Changes the offset.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    /// Moves the clock forward (or back, if negative) by `delta_ms`.
    pub fn advance_ms(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }

    fn system_nanos() -> i128 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        }
    }

    fn now_nanos(&self) -> i128 {
        Self::system_nanos() + i128::from(self.offset_ms()) * 1_000_000
    }

    /// Milliseconds since the Unix epoch on this clock.
    pub fn now_ms(&self) -> i64 {
        (self.now_nanos().div_euclid(1_000_000)) as i64
    }
}

impl dynoxide::storage_backend::Clock for SkewedClock {
    fn now_unix_secs(&self) -> u64 {
        u64::try_from(self.now_nanos().div_euclid(1_000_000_000)).unwrap_or(0)
    }

    fn now_unix_secs_f64(&self) -> f64 {
        (self.now_nanos() as f64 / 1e9).max(0.0)
    }
}

/// An in-process dynoxide server standing in for one region's DynamoDB and DynamoDB Streams.
///
/// The server runs on its own thread and Tokio runtime, bound to `127.0.0.1` on a port chosen at
/// [`start`](Self::start) and kept for the region's lifetime. [`stop`](Self::stop) is an outage:
/// the listener and every open connection are closed, so clients get "connection refused" at
/// once. [`resume`](Self::resume) serves the same in-memory database on the same port again.
/// Dropping the region stops its server.
///
/// dynoxide has no region isolation, so each region needs its own `DynamoRegion`; its records say
/// `awsRegion: "dynoxide"`, so take the region from [`name`](Self::name).
pub struct DynamoRegion {
    region: String,
    db: dynoxide::Database,
    clock: Arc<SkewedClock>,
    addr: SocketAddr,
    server: Option<BackgroundRuntime>,
}

impl std::fmt::Debug for DynamoRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoRegion")
            .field("region", &self.region)
            .field("addr", &self.addr)
            .field("running", &self.is_running())
            .field("clock_offset_ms", &self.clock.offset_ms())
            .finish()
    }
}

impl DynamoRegion {
    /// Starts a fresh in-memory region on `127.0.0.1:<free port>` whose clock runs
    /// `clock_offset_ms` ahead of the system clock (negative: behind). Callable from sync or
    /// async code; returns once the port is listening.
    pub fn start(region: &str, clock_offset_ms: i64) -> Result<Self> {
        Self::start_on(region, clock_offset_ms, 0)
    }

    /// Like [`start`](Self::start), on `127.0.0.1:port` (a fixed port, for the emulators a
    /// local `cargo lambda watch` is configured for; 0: a free one). Fails if the port is taken.
    pub fn start_on(region: &str, clock_offset_ms: i64, port: u16) -> Result<Self> {
        let clock = Arc::new(SkewedClock::new(clock_offset_ms));
        let db = dynoxide::Database::memory_with_clock(clock.clone())
            .map_err(|e| SandboxError::Dynoxide(e.to_string()))?;
        let (server, addr) = serve(region, db.clone(), SocketAddr::from((LOOPBACK, port)))?;
        tracing::info!(region, %addr, "dynoxide region started");
        Ok(DynamoRegion {
            region: region.to_string(),
            db,
            clock,
            addr,
            server: Some(server),
        })
    }

    /// The region's name (as given to [`start`](Self::start)).
    pub fn name(&self) -> &str {
        &self.region
    }

    /// `http://127.0.0.1:PORT`; stays the same across [`stop`](Self::stop) and
    /// [`resume`](Self::resume).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server is currently serving.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Outage: closes the listener and every open connection and returns once they are closed.
    /// The data stays in memory. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.shutdown();
            tracing::info!(region = %self.region, addr = %self.addr, "dynoxide region stopped");
        }
    }

    /// Ends an outage: serves the same database on the same port again. Retries the bind for up
    /// to 2 s in case the port is briefly held. Idempotent.
    pub fn resume(&mut self) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match serve(&self.region, self.db.clone(), self.addr) {
                Ok((server, _)) => {
                    self.server = Some(server);
                    tracing::info!(region = %self.region, addr = %self.addr, "dynoxide region resumed");
                    return Ok(());
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!("re-binding {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Expires every item whose TTL attribute is due on the region's clock, now, emitting
    /// `REMOVE` stream records with the DynamoDB service's `userIdentity`. Returns how many items
    /// were deleted. Blocking (briefly): works whether or not the server is running.
    pub fn sweep_ttl(&self) -> Result<usize> {
        self.db
            .sweep_ttl()
            .map_err(|e| SandboxError::Dynoxide(e.to_string()))
    }

    /// Milliseconds since the epoch on the region's (skewed) clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The region's clock, to read or move (`set_offset_ms`, `advance_ms`).
    pub fn clock(&self) -> &Arc<SkewedClock> {
        &self.clock
    }

    /// The embedded database, for direct (in-process) access.
    pub fn database(&self) -> &dynoxide::Database {
        &self.db
    }

    /// A DynamoDB client for this region with [`ClientOptions::default`].
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        self.client_with(&ClientOptions::default())
    }

    /// A DynamoDB client for this region with the given options.
    pub fn client_with(&self, options: &ClientOptions) -> aws_sdk_dynamodb::Client {
        dynamodb_client_with(&self.endpoint(), &self.region, options)
    }

    /// Creates a table with a `NEW_AND_OLD_IMAGES` stream and TTL (see [`create_table`]).
    pub async fn create_table(&self, spec: &TableSpec) -> Result<TableInfo> {
        create_table(&self.client(), spec).await
    }
}

impl Drop for DynamoRegion {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` and serves `db` on a background runtime until it is shut down.
fn serve(
    region: &str,
    db: dynoxide::Database,
    addr: SocketAddr,
) -> Result<(BackgroundRuntime, SocketAddr)> {
    BackgroundRuntime::start(&format!("dynoxide-{region}"), move || {
        let listener =
            bind_reuse(addr).map_err(|e| SandboxError::io(format!("binding {addr}"), e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| SandboxError::io("reading the bound address", e))?;
        let fut = async move {
            if let Err(e) =
                dynoxide::server::serve_with_shutdown(listener, db, std::future::pending()).await
            {
                tracing::error!("dynoxide server on {bound} failed: {e}");
            }
        };
        Ok((bound, fut))
    })
}

/// A table to create: string partition key, optional string sort key, TTL attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name (DynamoDB Local needs at least 3 characters).
    pub name: String,
    /// Partition key attribute (type S).
    pub partition_key: String,
    /// Optional sort key attribute (type S).
    pub sort_key: Option<String>,
    /// Attribute TTL is enabled on.
    pub ttl_attribute: String,
}

impl TableSpec {
    /// A table keyed by `partition_key` only, TTL on `expires_at`.
    pub fn new(name: &str, partition_key: &str) -> Self {
        TableSpec {
            name: name.to_string(),
            partition_key: partition_key.to_string(),
            sort_key: None,
            ttl_attribute: "expires_at".to_string(),
        }
    }

    /// Adds a sort key.
    pub fn with_sort_key(mut self, sort_key: &str) -> Self {
        self.sort_key = Some(sort_key.to_string());
        self
    }

    /// Sets the TTL attribute.
    pub fn with_ttl_attribute(mut self, attribute: &str) -> Self {
        self.ttl_attribute = attribute.to_string();
        self
    }
}

/// A created table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Table name.
    pub table_name: String,
    /// Table ARN (as the emulator spells it).
    pub table_arn: Option<String>,
    /// The stream's ARN.
    pub stream_arn: String,
}

/// A pay-per-request table keyed by `partition_key` (S) with no stream and no TTL: a
/// destination whose own pipeline is not under test (the benches write only into it, and a
/// stream would cost the emulator work the figures should not carry).
pub async fn create_destination_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    partition_key: &str,
) -> Result<()> {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(partition_key)?)
        .key_schema(key_element(partition_key, KeyType::Hash)?)
        .send()
        .await
        .map_err(|e| SandboxError::sdk("CreateTable", e))?;
    Ok(())
}

/// The definition of a string (`S`) key attribute.
fn string_attribute(name: &str) -> Result<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| SandboxError::InvalidArgument(e.to_string()))
}

fn key_element(name: &str, kind: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| SandboxError::InvalidArgument(e.to_string()))
}

/// How many items the table holds (a paginated `Scan` with `Select=COUNT`).
pub async fn count_items(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<u64> {
    let mut total = 0u64;
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| SandboxError::sdk("Scan", e))?;
        total += out.count.max(0) as u64;
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(total);
        }
    }
}

/// Creates a pay-per-request table with a `NEW_AND_OLD_IMAGES` stream, waits until it is
/// `ACTIVE` (at most 10 s), then enables TTL on `spec.ttl_attribute`.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
) -> Result<TableInfo> {
    let mut request = client
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(&spec.partition_key)?)
        .key_schema(key_element(&spec.partition_key, KeyType::Hash)?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(|e| SandboxError::InvalidArgument(e.to_string()))?,
        );
    if let Some(sk) = &spec.sort_key {
        request = request
            .attribute_definitions(string_attribute(sk)?)
            .key_schema(key_element(sk, KeyType::Range)?);
    }
    request
        .send()
        .await
        .map_err(|e| SandboxError::sdk("CreateTable", e))?;
    let description = wait_until_active(client, &spec.name).await?;
    enable_ttl(client, &spec.name, &spec.ttl_attribute).await?;
    let stream_arn = description
        .latest_stream_arn
        .ok_or_else(|| SandboxError::Decode {
            what: format!("DescribeTable {}", spec.name),
            detail: "no LatestStreamArn".to_string(),
        })?;
    Ok(TableInfo {
        table_name: spec.name.clone(),
        table_arn: description.table_arn,
        stream_arn,
    })
}

/// Polls `DescribeTable` until the table is `ACTIVE` (at most 10 s); its description then.
async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<TableDescription> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(description) = describe_table(client, table).await? {
            if description.table_status == Some(TableStatus::Active) {
                return Ok(description);
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(SandboxError::Timeout {
                what: format!("table {table} becoming ACTIVE"),
                timeout: Duration::from_secs(10),
                detail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn enable_ttl(client: &aws_sdk_dynamodb::Client, table: &str, attribute: &str) -> Result<()> {
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attribute)
                .build()
                .map_err(|e| SandboxError::InvalidArgument(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| SandboxError::sdk("UpdateTimeToLive", e))?;
    Ok(())
}

/// The stream ARN of an existing table.
pub async fn stream_arn_of(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<String> {
    describe_table(client, table)
        .await?
        .and_then(|t| t.latest_stream_arn)
        .ok_or_else(|| SandboxError::Decode {
            what: format!("DescribeTable {table}"),
            detail: "the table has no stream".to_string(),
        })
}

async fn describe_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Option<TableDescription>> {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| SandboxError::sdk("DescribeTable", e))?;
    Ok(described.table)
}
