// Mounts GraphiQL on this server's /graphql (queries over HTTP, subscriptions over
// WebSocket, graphql-transport-ws). A file of its own, not an inline script, so that the
// page's Content-Security-Policy allows scripts from this server only.
(function () {
  'use strict';
  var here = window.location;
  var fetcher = GraphiQL.createFetcher({
    url: here.origin + '/graphql',
    subscriptionUrl: (here.protocol === 'https:' ? 'wss://' : 'ws://') + here.host + '/graphql',
  });
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
  );
})();
