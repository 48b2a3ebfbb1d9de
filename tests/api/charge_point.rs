//! A scripted OCPP 1.6-J charge point speaking raw JSON frames over a real WebSocket.
//! It shares no types with the server; every frame it receives is checked against the
//! official schemas (compiled here, from the vendored files).

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(10);

fn schema(version: &str, file: &str) -> &'static jsonschema::Validator {
    type Cache = std::sync::Mutex<HashMap<String, &'static jsonschema::Validator>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache.entry(format!("{version}/{file}")).or_insert_with(|| {
        let path = format!(
            "{}/src/ocpp/schemas/v{version}/{file}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let value: Value = serde_json::from_str(&text).unwrap();
        Box::leak(Box::new(
            jsonschema::options()
                .should_validate_formats(true)
                .build(&value)
                .unwrap(),
        ))
    })
}

/// Asserts that `payload` is a valid request (or response) of `action` in OCPP `version`
/// ("1.6" or "2.0.1").
pub fn assert_valid_in(version: &str, action: &str, response: bool, payload: &Value) {
    let file = match (version, response) {
        (_, true) => format!("{action}Response"),
        ("1.6", false) => action.to_owned(),
        (_, false) => format!("{action}Request"),
    };
    let errors: Vec<String> = schema(version, &file)
        .iter_errors(payload)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{version} {file} payload {payload} breaks its schema: {errors:?}"
    );
}

/// How a connection attempt ended.
#[derive(Debug)]
pub enum Refused {
    Status(u16),
    Other(#[allow(dead_code)] String),
}

pub struct ChargePoint {
    pub id: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Calls from the server that arrived while we waited for something else.
    server_calls: VecDeque<(String, String, Value)>,
    /// Answers to our calls that arrived while we waited for something else.
    answers: HashMap<String, Value>,
    pub subprotocol: Option<String>,
    /// "1.6" or "2.0.1", as negotiated.
    pub version: &'static str,
}

pub struct Connect<'a> {
    pub url: String,
    pub id: &'a str,
    pub password: Option<&'a str>,
    pub protocols: &'a str,
    /// For wss:// URLs: the client's TLS configuration (trusted roots, client certificate).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl ChargePoint {
    pub async fn connect(url: String, id: &str, password: Option<&str>) -> ChargePoint {
        Self::try_connect(Connect {
            url,
            id,
            password,
            protocols: "ocpp1.6",
            tls: None,
        })
        .await
        .unwrap_or_else(|e| panic!("charger {id} could not connect: {e:?}"))
    }

    /// Connects offering only OCPP 2.0.1.
    pub async fn connect_201(url: String, id: &str, password: Option<&str>) -> ChargePoint {
        let cp = Self::try_connect(Connect {
            url,
            id,
            password,
            protocols: "ocpp2.0.1",
            tls: None,
        })
        .await
        .unwrap_or_else(|e| panic!("charger {id} could not connect: {e:?}"));
        assert_eq!(cp.version, "2.0.1");
        cp
    }

    pub async fn try_connect(c: Connect<'_>) -> Result<ChargePoint, Refused> {
        let mut request = c.url.as_str().into_client_request().expect("valid URL");
        if !c.protocols.is_empty() {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(c.protocols).unwrap(),
            );
        }
        if let Some(password) = c.password {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", c.id));
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
            );
        }
        let connector = c.tls.map(tokio_tungstenite::Connector::Rustls);
        match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
            .await
        {
            Ok((ws, response)) => Ok(ChargePoint {
                id: c.id.to_owned(),
                ws,
                next_id: 0,
                server_calls: VecDeque::new(),
                answers: HashMap::new(),
                version: match response
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap())
                {
                    Some("ocpp2.0.1") => "2.0.1",
                    _ => "1.6",
                },
                subprotocol: response
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap().to_owned()),
            }),
            Err(WsError::Http(response)) => Err(Refused::Status(response.status().as_u16())),
            Err(e) => Err(Refused::Other(e.to_string())),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("sending a frame");
    }

    /// Sends `parts` as one message in continuation frames, their bytes as they are
    /// (valid UTF-8 or not): the first part as a text frame without FIN, the rest as
    /// continuations, the last with FIN; one part is a whole text frame. With
    /// `started: false` the first part is sent as a continuation too (a protocol error).
    pub async fn send_fragments(&mut self, parts: &[&[u8]], started: bool) {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        for (i, part) in parts.iter().enumerate() {
            let opcode = if i == 0 && started {
                Data::Text
            } else {
                Data::Continue
            };
            let frame = Frame::message(part.to_vec(), OpCode::Data(opcode), i + 1 == parts.len());
            self.ws
                .send(Message::Frame(frame))
                .await
                .expect("sending a fragment");
        }
    }

    /// The next frame from the server as JSON, or the close frame as `Err`.
    pub async fn recv_frame(&mut self, timeout: Duration) -> Result<Value, Option<CloseFrame>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a frame from the server in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON {text}: {e}")));
                }
                Some(Ok(Message::Close(frame))) => return Err(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Reads (and so answers pings) for `duration`, expecting no frame from the server.
    pub async fn idle(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(next) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("unexpected while idle: {other:?}"),
            }
        }
    }

    /// Sends a CALL and returns the whole answer frame (CALLRESULT or CALLERROR).
    pub async fn call_raw(&mut self, action: &str, payload: Value) -> Value {
        self.next_id += 1;
        let id = format!("{}-{}", self.id, self.next_id);
        self.send_text(&json!([2, id, action, payload]).to_string())
            .await;
        self.answer_to(&id).await
    }

    /// Waits for the answer to our call `id`, keeping server calls that arrive meanwhile.
    pub async fn answer_to(&mut self, id: &str) -> Value {
        if let Some(answer) = self.answers.remove(id) {
            return answer;
        }
        loop {
            let frame = self
                .recv_frame(TIMEOUT)
                .await
                .unwrap_or_else(|c| panic!("closed while waiting for {id}: {c:?}"));
            match frame[0].as_u64() {
                Some(2) => self.server_calls.push_back((
                    frame[1].as_str().unwrap().to_owned(),
                    frame[2].as_str().unwrap().to_owned(),
                    frame[3].clone(),
                )),
                Some(3 | 4) if frame[1] == id => return frame,
                Some(3 | 4) => {
                    self.answers
                        .insert(frame[1].as_str().unwrap().to_owned(), frame);
                }
                _ => panic!("unexpected frame {frame}"),
            }
        }
    }

    /// Sends a CALL that must succeed; returns its schema-checked CALLRESULT payload.
    pub async fn call(&mut self, action: &str, payload: Value) -> Value {
        assert_valid_in(self.version, action, false, &payload);
        let frame = self.call_raw(action, payload).await;
        assert_eq!(frame[0], 3, "{action} was refused: {frame}");
        assert_valid_in(self.version, action, true, &frame[2]);
        frame[2].clone()
    }

    /// The next CALL from the server (schema-checked): (message id, action, payload).
    pub async fn next_server_call(&mut self) -> (String, String, Value) {
        let call = match self.server_calls.pop_front() {
            Some(call) => call,
            None => loop {
                let frame = self
                    .recv_frame(TIMEOUT)
                    .await
                    .unwrap_or_else(|c| panic!("closed while waiting for a call: {c:?}"));
                if frame[0] == 2 {
                    break (
                        frame[1].as_str().unwrap().to_owned(),
                        frame[2].as_str().unwrap().to_owned(),
                        frame[3].clone(),
                    );
                }
                self.answers
                    .insert(frame[1].as_str().unwrap().to_owned(), frame);
            },
        };
        assert_valid_in(self.version, &call.1, false, &call.2);
        call
    }

    pub async fn respond(&mut self, message_id: &str, payload: Value) {
        self.send_text(&json!([3, message_id, payload]).to_string())
            .await;
    }

    pub async fn boot(&mut self) -> Value {
        self.call(
            "BootNotification",
            json!({"chargePointVendor": "JucrTest", "chargePointModel": "Scripted-1"}),
        )
        .await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Waits until the server closes the connection; returns the close code, if any.
    pub async fn closed_by_server(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("the server closes in time")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// A WebSocket handshake over a bare TCP socket, for what a WebSocket client library
/// refuses to do or show: `behind` goes out in the same write as the request head (a
/// client that does not wait for the 101). Returns the response head and the first
/// frame the server sends, if any.
pub async fn raw_handshake(
    port: u16,
    path: &str,
    extra_headers: &[(&str, String)],
    behind: &[u8],
) -> (String, Option<RawFrame>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(behind);
    stream.write_all(&bytes).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let head_end = loop {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response head");
        received.extend_from_slice(&buf[..n]);
        if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut rest = received[head_end..].to_vec();
    let frame = loop {
        if let Some(frame) = RawFrame::parse(&rest) {
            break Some(frame);
        }
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => rest.extend_from_slice(&buf[..n]),
            _ => break None,
        }
    };
    (head, frame)
}

/// One unmasked frame from the server, read off a bare socket.
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The frame at the start of `bytes`, once all of it is there.
    fn parse(bytes: &[u8]) -> Option<RawFrame> {
        let (&first, &second) = (bytes.first()?, bytes.get(1)?);
        let (len, start) = match second & 0x7f {
            126 => (
                u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
                10,
            ),
            len => (len as usize, 2),
        };
        Some(RawFrame {
            opcode: first & 0x0f,
            payload: bytes.get(start..start + len)?.to_vec(),
        })
    }

    /// The close code, if this is a close frame with one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn text(&self) -> Option<&str> {
        (self.opcode == 1).then(|| std::str::from_utf8(&self.payload).ok())?
    }
}

/// A client's text frame (masked, as RFC 6455 requires of clients), under 126 bytes.
pub fn masked_text_frame(text: &str) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let len = u8::try_from(text.len()).expect("a short frame");
    assert!(len < 126, "a short frame");
    let mut frame = vec![0x81, 0x80 | len];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}
