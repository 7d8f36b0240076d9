//! source: reading log files. One [`tailer::FileTail`] per configured
//! source follows its file across rotation and truncation, splits what it
//! reads into lines ([`lines`]) and hands batches to the spool writer.
pub mod filewatch;
pub mod lines;
pub mod tailer;
