/*
 * Boots GraphiQL for the prediction gateway. Part of the gateway (Apache-2.0), not vendored.
 *
 * It reads its settings from the page's <script type="application/json" id="graphiql-config">
 * element ({"endpoint": URL, "tabs": [{"query": ..., "variables": ...}]}), so that the page
 * needs no inline JavaScript and works under a Content-Security-Policy without 'unsafe-inline'
 * or 'unsafe-eval'. Globals it uses come from the vendored UMD bundles: React, ReactDOM,
 * GraphiQL and (optionally) GraphiQLPluginExplorer.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("graphiql-config").textContent);
  // Relative endpoints resolve against the page, so the page works behind a path prefix.
  const endpoint = new URL(config.endpoint, document.baseURI).href;

  // GraphiQL works out the operation name a moment after the query editor changes (e.g. on
  // switching tabs), so a quick Run can send the previous tab's name with this tab's query. A
  // document with a single operation needs no name, so a name it does not define is dropped.
  function withValidOperationName(params) {
    if (!params.operationName) return params;
    let operations;
    try {
      operations = GraphiQL.GraphQL.parse(params.query).definitions.filter(
        (definition) => definition.kind === "OperationDefinition",
      );
    } catch (error) {
      return params; // the server reports the syntax error
    }
    const names = operations.map((operation) => operation.name && operation.name.value);
    if (operations.length === 1 && !names.includes(params.operationName)) {
      return { ...params, operationName: undefined };
    }
    return params;
  }

  async function fetcher(params, options) {
    const headers = {
      Accept: "application/graphql-response+json, application/json",
      ...((options && options.headers) || {}),
      "Content-Type": "application/json",
    };
    const response = await fetch(endpoint, {
      method: "POST",
      headers: headers,
      body: JSON.stringify(withValidOperationName(params)),
      credentials: "same-origin",
    });
    const text = await response.text();
    try {
      // The whole body goes to GraphiQL, so `extensions` are shown next to `data`/`errors`.
      return JSON.parse(text);
    } catch (error) {
      return {
        errors: [
          {
            message:
              "The server answered HTTP " + response.status + " " + response.statusText +
              " with a body that is not JSON.",
            extensions: { body: text.slice(0, 2000) },
          },
        ],
      };
    }
  }

  // The name of a document's first operation: GraphiQL's title for its tab.
  function operationName(query) {
    try {
      const operation = GraphiQL.GraphQL.parse(query).definitions.find(
        (definition) => definition.kind === "OperationDefinition",
      );
      return (operation && operation.name && operation.name.value) || null;
    } catch (error) {
      return null;
    }
  }

  // GraphiQL restores the tabs of an earlier visit and then ignores defaultTabs: the example of
  // a model served since (or by another gateway on this origin) would never show. Examples this
  // browser has not been offered yet are added after the saved tabs; the saved ones, edits
  // included, stay as they are, and an example the user closed does not come back.
  const TAB_STATE = "graphiql:tabState";
  const OFFERED = "gateway:offeredExamples";
  function addNewExamples(examples) {
    try {
      const titles = examples.map((tab) => operationName(tab.query) || "<untitled>");
      const saved = JSON.parse(localStorage.getItem(TAB_STATE) || "null");
      if (saved && Array.isArray(saved.tabs)) {
        const offered = JSON.parse(localStorage.getItem(OFFERED) || "null");
        const known = new Set(Array.isArray(offered) ? offered : saved.tabs.map((t) => t.title));
        examples.forEach((tab, index) => {
          if (known.has(titles[index])) return;
          saved.tabs.push({
            id: Math.random().toString(36).slice(2),
            hash: null,
            title: titles[index],
            query: tab.query,
            variables: tab.variables || null,
            headers: null,
            operationName: null,
            response: null,
          });
        });
        localStorage.setItem(TAB_STATE, JSON.stringify(saved));
      }
      const previously = JSON.parse(localStorage.getItem(OFFERED) || "[]");
      const all = new Set([...(Array.isArray(previously) ? previously : []), ...titles]);
      localStorage.setItem(OFFERED, JSON.stringify([...all]));
    } catch (error) {
      // No storage (a private window): GraphiQL starts from the examples every time anyway.
    }
  }

  const tabs = config.tabs.length > 0 ? config.tabs : undefined;
  if (tabs) addNewExamples(tabs);
  const plugins = window.GraphiQLPluginExplorer
    ? [window.GraphiQLPluginExplorer.explorerPlugin()]
    : [];

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultTabs: tabs,
      plugins: plugins,
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: tabs && tabs[0].variables ? "variables" : undefined,
    }),
  );
})();
