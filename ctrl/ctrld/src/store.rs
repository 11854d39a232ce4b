//! The durable store: one redb file (`<state-dir>/ctrld.redb`).
//!
//! One table per resource kind, keyed by name, holding the prost-encoded message; `meta` holds
//! the global config version; `ca` the certificate authority. Every change is one write
//! transaction with redb's default `Durability::Immediate`: [`Store::commit`] returns only after
//! the data and the new version are on disk (fsync), and a crash at any point leaves either the
//! whole change or none of it.

use std::path::Path;

use popmesh_ctrl_api::pb;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const CA: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("ca");
const VERSION_KEY: &str = "config_version";

/// Kinds of stored resource, one table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Media sessions.
    Session,
    /// Signaling services.
    Service,
    /// Signaling routes.
    Route,
    /// Canary splits (keyed by service).
    Canary,
    /// Authorization policies.
    Policy,
    /// Registered appliances.
    Appliance,
}

impl Kind {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }

    /// Table name, also used in resource statuses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Canary => "canary",
            Kind::Policy => "policy",
            Kind::Appliance => "appliance",
        }
    }

    const ALL: [Kind; 6] = [
        Kind::Session,
        Kind::Service,
        Kind::Route,
        Kind::Canary,
        Kind::Policy,
        Kind::Appliance,
    ];
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb could not open, read or commit.
    #[error("store: {0}")]
    Db(redb::Error),
    /// A stored record does not decode (a corrupt or foreign file).
    #[error("store: {kind} {name:?} does not decode: {error}")]
    Decode {
        /// Table.
        kind: &'static str,
        /// Key.
        name: String,
        /// Decoder error.
        error: prost::DecodeError,
    },
    /// The CA record is missing or incomplete: the state directory was not bootstrapped.
    #[error("store: no certificate authority; run `popmesh-ctrld bootstrap` first")]
    NoCa,
}

// Not `#[from]`: the redb error is part of the message, not a separate source, so anyhow's
// chain does not print it twice.
fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// One change: records to put and to delete, committed with a new version.
#[derive(Debug, Default)]
pub struct Write {
    /// (kind, name, encoded message).
    pub puts: Vec<(Kind, String, Vec<u8>)>,
    /// (kind, name).
    pub deletes: Vec<(Kind, String)>,
}

impl Write {
    /// Adds a put of `msg`.
    pub fn put(&mut self, kind: Kind, name: &str, msg: &impl Message) {
        self.puts
            .push((kind, name.to_string(), msg.encode_to_vec()));
    }

    /// Adds a delete.
    pub fn delete(&mut self, kind: Kind, name: &str) {
        self.deletes.push((kind, name.to_string()));
    }
}

/// Everything stored, decoded.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Global config version (0 for a fresh store).
    pub version: u64,
    /// Sessions.
    pub sessions: Vec<pb::Session>,
    /// Services.
    pub services: Vec<pb::Service>,
    /// Routes.
    pub routes: Vec<pb::Route>,
    /// Canaries.
    pub canaries: Vec<pb::Canary>,
    /// Policies.
    pub policies: Vec<pb::Policy>,
    /// Appliance registrations.
    pub appliances: Vec<pb::RegisterRequest>,
}

/// The CA as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaRecord {
    /// Trust domain of every SVID.
    pub trust_domain: String,
    /// The signing certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Roots clients and servers trust, PEM (the CA itself when generated).
    pub roots_pem: String,
    /// Whether the signing certificate is an imported intermediate.
    pub intermediate: bool,
}

/// The redb database.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database file and its tables.
    ///
    /// # Errors
    /// When redb cannot open or initialise the file (also: another process has it open).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            tx.open_table(META).map_err(db_err)?;
            tx.open_table(CA).map_err(db_err)?;
            for k in Kind::ALL {
                tx.open_table(k.table()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(Store { db })
    }

    /// Reads everything.
    ///
    /// # Errors
    /// On a read failure or a record that does not decode.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let version = tx
            .open_table(META)
            .map_err(db_err)?
            .get(VERSION_KEY)
            .map_err(db_err)?
            .map_or(0, |v| v.value());
        fn all<M: Message + Default>(
            tx: &redb::ReadTransaction,
            kind: Kind,
        ) -> Result<Vec<M>, StoreError> {
            let table = tx.open_table(kind.table()).map_err(db_err)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(M::decode(v.value()).map_err(|error| StoreError::Decode {
                    kind: kind.name(),
                    name: k.value().to_string(),
                    error,
                })?);
            }
            Ok(out)
        }
        Ok(Loaded {
            version,
            sessions: all(&tx, Kind::Session)?,
            services: all(&tx, Kind::Service)?,
            routes: all(&tx, Kind::Route)?,
            canaries: all(&tx, Kind::Canary)?,
            policies: all(&tx, Kind::Policy)?,
            appliances: all(&tx, Kind::Appliance)?,
        })
    }

    /// Applies `write` and sets the config version to `version` in one durable transaction.
    /// `version` `None` keeps the version (appliance registrations are not config changes).
    ///
    /// # Errors
    /// When the transaction fails; then nothing of it is stored.
    pub fn commit(&self, version: Option<u64>, write: &Write) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            for k in Kind::ALL {
                if !write.puts.iter().any(|p| p.0 == k) && !write.deletes.iter().any(|d| d.0 == k) {
                    continue;
                }
                let mut table = tx.open_table(k.table()).map_err(db_err)?;
                for (_, name, bytes) in write.puts.iter().filter(|p| p.0 == k) {
                    table
                        .insert(name.as_str(), bytes.as_slice())
                        .map_err(db_err)?;
                }
                for (_, name) in write.deletes.iter().filter(|d| d.0 == k) {
                    table.remove(name.as_str()).map_err(db_err)?;
                }
            }
            if let Some(v) = version {
                tx.open_table(META)
                    .map_err(db_err)?
                    .insert(VERSION_KEY, v)
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }

    /// Stores the CA (bootstrap).
    ///
    /// # Errors
    /// When the transaction fails.
    pub fn put_ca(&self, ca: &CaRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(CA).map_err(db_err)?;
            let intermediate: &[u8] = if ca.intermediate { b"1" } else { b"0" };
            for (k, v) in [
                ("trust_domain", ca.trust_domain.as_bytes()),
                ("cert_pem", ca.cert_pem.as_bytes()),
                ("key_pem", ca.key_pem.as_bytes()),
                ("roots_pem", ca.roots_pem.as_bytes()),
                ("intermediate", intermediate),
            ] {
                t.insert(k, v).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }

    /// Reads the CA.
    ///
    /// # Errors
    /// [`StoreError::NoCa`] when the store was not bootstrapped.
    pub fn ca(&self) -> Result<CaRecord, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(CA).map_err(db_err)?;
        let get = |k: &str| -> Result<String, StoreError> {
            let v = t.get(k).map_err(db_err)?.ok_or(StoreError::NoCa)?;
            String::from_utf8(v.value().to_vec()).map_err(|_| StoreError::NoCa)
        };
        Ok(CaRecord {
            trust_domain: get("trust_domain")?,
            cert_pem: get("cert_pem")?,
            key_pem: get("key_pem")?,
            roots_pem: get("roots_pem")?,
            intermediate: get("intermediate")? == "1",
        })
    }
}
